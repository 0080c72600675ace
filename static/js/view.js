// Zoom and pan of the image area: one CSS transform on the layer that holds the image, the masks and
// the prompts, so every layer stays aligned at any zoom. Wheel zooms about the pointer; dragging with
// Space held (or the middle button) pans.

const MIN_ZOOM = 0.05;
const MAX_ZOOM = 32;

export class View {
  constructor(stage, layer, onChange) {
    this.stage = stage;
    this.layer = layer;
    this.onChange = onChange;
    this.width = 1;
    this.height = 1;
    this.zoom = 1;
    this.x = 0; // screen offset of the image's top-left corner within the stage
    this.y = 0;
    stage.addEventListener("wheel", (event) => {
      event.preventDefault();
      // Trackpads send small deltas, mouse wheels ~100 per notch: scale smoothly with the delta.
      this.zoomAt(Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.002)), event.clientX, event.clientY);
    }, { passive: false });
    new ResizeObserver(() => this.fitted && this.fit()).observe(stage);
  }

  setImage(width, height) {
    this.width = width;
    this.height = height;
    this.layer.style.width = `${width}px`;
    this.layer.style.height = `${height}px`;
    this.fit();
  }

  fit() {
    const margin = 16;
    const w = this.stage.clientWidth - 2 * margin;
    const h = this.stage.clientHeight - 2 * margin;
    this.zoom = Math.max(Math.min(w / this.width, h / this.height), MIN_ZOOM);
    this.x = (this.stage.clientWidth - this.width * this.zoom) / 2;
    this.y = (this.stage.clientHeight - this.height * this.zoom) / 2;
    this.fitted = true;
    this.apply();
  }

  zoomAt(factor, clientX, clientY) {
    const rect = this.stage.getBoundingClientRect();
    const sx = clientX - rect.left;
    const sy = clientY - rect.top;
    const zoom = Math.min(Math.max(this.zoom * factor, MIN_ZOOM), MAX_ZOOM);
    // Keep the image point under the pointer where it is.
    this.x = sx - ((sx - this.x) / this.zoom) * zoom;
    this.y = sy - ((sy - this.y) / this.zoom) * zoom;
    this.zoom = zoom;
    this.fitted = false;
    this.apply();
  }

  zoomCentre(factor) {
    const rect = this.stage.getBoundingClientRect();
    this.zoomAt(factor, rect.left + rect.width / 2, rect.top + rect.height / 2);
  }

  panBy(dx, dy) {
    this.x += dx;
    this.y += dy;
    this.fitted = false;
    this.apply();
  }

  apply() {
    this.layer.style.transform = `translate(${this.x}px, ${this.y}px) scale(${this.zoom})`;
    // Image pixels become visible squares once they are big enough to tell apart.
    this.layer.classList.toggle("pixelated", this.zoom >= 3);
    this.onChange(this);
  }

  // Client coordinates -> image pixels (unclamped).
  toImage(clientX, clientY) {
    const rect = this.stage.getBoundingClientRect();
    return [(clientX - rect.left - this.x) / this.zoom, (clientY - rect.top - this.y) / this.zoom];
  }

  contains([x, y]) {
    return x >= 0 && y >= 0 && x < this.width && y < this.height;
  }
}
