// Moving between the project's images without leaving the page, so the decoder and the embeddings it
// caches stay warm: previous / next in project order, opening an image in place (address bar, title,
// picture, embedding) and fetching the next image's embedding and picture ahead of the user.
import { api } from "./api.js";
import { chip, report, setStatus } from "./status.js";

const $ = (id) => document.getElementById(id);
const EMBEDDING_TEXT = { queued: "Embedding queued", embedding: "Computing embedding…", failed: "Embedding failed" };
const PREFETCH_DELAY_MS = 300; // after the opened image is ready, so its first hovers and clicks come first

async function loadPicture(id) {
  const img = new Image();
  img.src = `/api/v1/images/${id}/file`;
  await img.decode();
  return img;
}

export class Navigation {
  // state: the page's {image, generation, ready}, set here as images open; generation bumps on every
  // switch, so late answers for an older image can be dropped. page: {root, canvas (for the picture),
  // embeddings (an EmbeddingLoader), decoderReady, reset() (drop the old image's prompts and objects),
  // layout(width, height), loadMasks()}.
  constructor(projectId, state, page) {
    this.projectId = projectId;
    this.state = state;
    this.page = page;
    this.images = []; // the project's image ids in order
    $("prev-button").addEventListener("click", () => this.go(-1));
    $("next-button").addEventListener("click", () => this.go(+1));
  }

  async refresh() {
    const images = await api(`/api/v1/projects/${this.projectId}/images/`);
    this.images = images.map((i) => i.id);
    if (this.state.image) this.showPosition();
  }

  neighbour(step) {
    const at = this.images.indexOf(this.state.image.id);
    const { dataset } = this.page.root;
    if (at < 0) return Number((step > 0 ? dataset.next : dataset.previous) || 0) || null;
    return this.images[at + step] ?? null;
  }

  go(step) {
    const id = this.neighbour(step);
    if (id) this.open(id).catch(report);
  }

  showPosition() {
    const at = this.images.indexOf(this.state.image.id);
    $("image-position").textContent = at >= 0 ? `${at + 1} / ${this.images.length}` : "";
    $("prev-button").disabled = !this.neighbour(-1);
    $("next-button").disabled = !this.neighbour(+1);
    this.page.root.dataset.previous = this.neighbour(-1) || "";
    this.page.root.dataset.next = this.neighbour(+1) || "";
  }

  // `first`: the image the page was served with, whose size and name are in the page already.
  async open(id, first = false) {
    const { state, page } = this;
    const { root, canvas } = page;
    const generation = ++state.generation;
    state.ready = false;
    page.reset();
    root.dataset.ready = "0";
    const detail = first
      ? { id, width: Number(root.dataset.width), height: Number(root.dataset.height), name: $("image-name").textContent }
      : await api(`/api/v1/images/${id}/`);
    if (generation !== state.generation) return;
    state.image = { id, width: detail.width, height: detail.height, name: detail.name };
    root.dataset.imageId = String(id);
    root.dataset.width = String(detail.width);
    root.dataset.height = String(detail.height);
    if (!first) {
      history.replaceState(null, "", `/images/${id}/`);
      document.title = `${detail.name} · SAM annotator`;
      $("image-name").textContent = detail.name;
      $("crumb-image").textContent = `/ ${detail.name}`;
    }
    page.layout(detail.width, detail.height);
    canvas.getContext("2d").clearRect(0, 0, detail.width, detail.height);
    this.showPosition();
    setStatus("Loading image…", "loading");
    const picture = loadPicture(id).then((img) => {
      if (generation === state.generation) canvas.getContext("2d").drawImage(img, 0, 0);
    });
    const masks = page.loadMasks();
    chip("embedding-status", "Embedding…", "loading");
    await page.embeddings.ensure(id, (status) => {
      if (generation !== state.generation) return;
      chip("embedding-status", EMBEDDING_TEXT[status] || status, "loading");
      setStatus(EMBEDDING_TEXT[status] || status, "loading");
    });
    await Promise.all([picture, masks, page.decoderReady]);
    if (generation !== state.generation) return;
    chip("embedding-status", "Embedding ready", "ready");
    state.ready = true;
    root.dataset.ready = "1";
    setStatus("Ready — hover over an object", "ready");
    this.prefetch(this.neighbour(+1));
  }

  // The next image's embedding and picture, fetched once the current one is usable (HTTP-cached and in
  // the worker's LRU), so moving on is instant.
  prefetch(id) {
    if (!id) return;
    const generation = this.state.generation;
    setTimeout(() => {
      if (generation !== this.state.generation) return;
      this.page.embeddings.ensure(id).then(() => { this.page.root.dataset.prefetched = String(id); }).catch(() => {});
      loadPicture(id).catch(() => {});
    }, PREFETCH_DELAY_MS);
  }
}
