// Pointer gestures on the image: a click adds a point (right button or Alt: negative), a drag draws a
// box, a plain move hovers, and Space held (see shortcuts.js) or the middle button pans. Positions are
// image pixels; the readout in the corner shows the pixel under the pointer.
//
// The readout changes on every move, and every change makes the browser render a frame. While a hover
// mask is being decoded the readout waits for it (refreshCursor), so a moving pointer costs one frame
// per mask instead of one per move: frames take CPU from the decoder, a lot where the page is
// composited in software (a machine or VM without a GPU: ~10% slower decodes, benchmarks/RESULTS.md).

const DRAG_THRESHOLD = 4; // screen pixels before a press becomes a box
// pointermove is dispatched once per animation frame; pointerrawupdate (Chromium, secure contexts) as
// soon as the input arrives, so a hover decode starts up to a frame earlier.
const MOVE_EVENT = "onpointerrawupdate" in window ? "pointerrawupdate" : "pointermove";

export class PointerInput {
  // on: {enabled() (the image is ready for prompts), press() (a prompt gesture began), hover(point, time),
  // unhover(), point([x, y, label]), box([x0, y0, x1, y1]), boxChanged() (repaint the box being drawn),
  // deferCursor() (true while a hover mask is on its way: see the top)}
  constructor(stage, view, readout, on) {
    this.stage = stage;
    this.view = view;
    this.readout = readout;
    this.on = on;
    this.drag = null; // a press on the image: {screen, start, moved, box, negative, button}
    this.pan = null; // last client position while panning
    this.space = false;
    this.cursorFrame = null;
    this.cursor = null;
    stage.addEventListener("contextmenu", (event) => event.preventDefault());
    stage.addEventListener("pointerdown", (event) => this.down(event));
    stage.addEventListener(MOVE_EVENT, (event) => this.move(event));
    stage.addEventListener("pointerup", () => this.up());
    stage.addEventListener("pointercancel", () => { this.drag = null; this.pan = null; on.boxChanged(); });
    stage.addEventListener("pointerleave", () => { if (!this.drag) on.unhover(); });
  }

  // The box being drawn, once the press has moved far enough to be a drag.
  get dragBox() {
    return this.drag && this.drag.moved ? this.drag.box : null;
  }

  setSpace(held) {
    this.space = held;
    this.stage.classList.toggle("pan-ready", held);
  }

  down(event) {
    if (event.button === 1 || (event.button === 0 && this.space)) {
      this.pan = { x: event.clientX, y: event.clientY };
      this.stage.classList.add("panning");
      this.stage.setPointerCapture(event.pointerId);
      event.preventDefault();
      return;
    }
    if (!this.on.enabled() || (event.button !== 0 && event.button !== 2)) return;
    const start = this.view.toImage(event.clientX, event.clientY);
    if (!this.view.contains(start)) return;
    this.on.press();
    this.drag = { screen: [event.clientX, event.clientY], start, moved: false, box: null, negative: event.button === 2 || event.altKey, button: event.button };
    this.stage.setPointerCapture(event.pointerId);
  }

  move(event) {
    if (this.pan) {
      this.view.panBy(event.clientX - this.pan.x, event.clientY - this.pan.y);
      this.pan = { x: event.clientX, y: event.clientY };
      return;
    }
    const point = this.view.toImage(event.clientX, event.clientY);
    const inside = this.view.contains(point);
    this.showCursor(inside ? point : null);
    const drag = this.drag;
    if (drag) {
      const distance = Math.hypot(event.clientX - drag.screen[0], event.clientY - drag.screen[1]);
      if (drag.button === 0 && (drag.moved || distance > DRAG_THRESHOLD)) {
        if (!drag.moved) this.on.unhover();
        drag.moved = true;
        const [x, y] = this.clampToImage(point);
        drag.box = [Math.min(drag.start[0], x), Math.min(drag.start[1], y), Math.max(drag.start[0], x), Math.max(drag.start[1], y)];
        this.on.boxChanged();
      }
      return;
    }
    if (inside) this.on.hover(point, event.timeStamp);
    else this.on.unhover();
  }

  up() {
    const drag = this.drag;
    this.drag = null;
    if (this.pan) {
      this.pan = null;
      this.stage.classList.remove("panning");
      return;
    }
    if (!drag) return;
    if (drag.moved) {
      if (drag.box[2] - drag.box[0] >= 1 && drag.box[3] - drag.box[1] >= 1) this.on.box(drag.box);
      else this.on.boxChanged();
    } else {
      this.on.point([drag.start[0], drag.start[1], drag.negative ? 0 : 1]);
    }
  }

  // The pixel under the pointer, written once per frame at most (pointer events come faster).
  showCursor(point) {
    this.cursor = point;
    if (!this.on.deferCursor()) this.refreshCursor();
  }

  refreshCursor() {
    if (this.cursorFrame !== null) return;
    this.cursorFrame = requestAnimationFrame(() => {
      this.cursorFrame = null;
      this.readout.textContent = this.cursor ? `${Math.floor(this.cursor[0])}, ${Math.floor(this.cursor[1])}` : "";
    });
  }

  clampToImage([x, y]) {
    return [Math.min(Math.max(x, 0), this.view.width), Math.min(Math.max(y, 0), this.view.height)];
  }
}
