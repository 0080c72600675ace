// The page's handle on the decoder worker. One decode runs at a time; clicks wait their turn in order,
// while hover keeps a single slot: a newer hover replaces a waiting one, which resolves to null, so
// hover requests never queue up behind a slow decoder.

export class Decoder {
  constructor(workerUrl) {
    this.worker = new Worker(workerUrl, { type: "module" });
    this.nextId = 1;
    this.pending = new Map();
    this.busy = false;
    this.clicks = [];
    this.hoverSlot = null;
    this.worker.onmessage = ({ data }) => {
      const call = this.pending.get(data.id);
      this.pending.delete(data.id);
      if (data.ok) call.resolve(data.result);
      else call.reject(new Error(data.error));
    };
  }

  call(type, args = {}, transfer = []) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, type, ...args }, transfer);
    });
  }

  init(args) { return this.call("init", args); }

  setEmbedding(imageId, buffer) { return this.call("setEmbedding", { imageId, buffer }, [buffer]); }

  hasEmbedding(imageId) { return this.call("hasEmbedding", { imageId }); }

  // Full-resolution mask from low-res logits (copied: the caller keeps its array). Pure JS in the
  // worker, so it need not wait for a decode's turn.
  upscale(lowRes, height, width) { return this.call("upscale", { lowRes, height, width }); }

  decode(args) {
    return new Promise((resolve, reject) => {
      this.clicks.push({ args, resolve, reject });
      this.pump();
    });
  }

  hover(args) {
    if (this.hoverSlot) this.hoverSlot.resolve(null);
    return new Promise((resolve, reject) => {
      this.hoverSlot = { args, resolve, reject };
      this.pump();
    });
  }

  // A click made after a hover also makes that hover stale.
  dropHover() {
    if (this.hoverSlot) this.hoverSlot.resolve(null);
    this.hoverSlot = null;
  }

  async pump() {
    if (this.busy) return;
    const job = this.clicks.shift() || this.hoverSlot;
    if (!job) return;
    if (job === this.hoverSlot) this.hoverSlot = null;
    this.busy = true;
    try {
      job.resolve(await this.call("decode", job.args));
    } catch (error) {
      job.reject(error);
    } finally {
      this.busy = false;
      this.pump();
    }
  }
}
