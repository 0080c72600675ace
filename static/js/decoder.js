// The page's handle on the decoder worker. One decode runs at a time; clicks wait their turn in order,
// while hover keeps a single slot: a newer hover replaces a waiting one, which resolves to null, so
// hover requests never queue up behind a slow decoder.
//
// A hover that has already waited while the pointer keeps moving is stale: the next pointer event is
// due in less than an event interval, and decoding that one instead shows the pointer's position a
// little later but fresher (input sampled as late as possible). So when the decoder frees up and the
// waiting hover is older than HOLD.minAgeMs, it is held until the next event is due (plus slack);
// a newer hover starts at once, and if none comes (the pointer stopped) the held one runs.
const HOLD = {
  minAgeMs: 3,
  slackMs: 3,
  maxIntervalMs: 34, // slower than ~30 events/s is not a steady move: never hold
};
const INTERVAL_SAMPLES = 8;

export class Decoder {
  constructor(workerUrl) {
    this.worker = new Worker(workerUrl, { type: "module" });
    this.nextId = 1;
    this.pending = new Map();
    this.busy = false;
    this.clicks = [];
    this.hoverSlot = null;
    this.hoverTimes = []; // arrival times of the latest hovers, to know the pointer's event interval
    this.holdTimer = null;
    this.hoverRunning = false;
    this.hold = { ...HOLD };
    this.onIdle = () => {}; // called when the last queued decode is done
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

  // time: the pointer event's timeStamp (performance.now() clock).
  hover(args, time = performance.now()) {
    if (this.hoverSlot) this.hoverSlot.resolve(null);
    this.hoverTimes.push(time);
    if (this.hoverTimes.length > INTERVAL_SAMPLES + 1) this.hoverTimes.shift();
    return new Promise((resolve, reject) => {
      this.hoverSlot = { args, time, resolve, reject };
      this.pump();
    });
  }

  // Median gap between the latest hovers, or null when the pointer is not moving steadily.
  eventInterval() {
    const times = this.hoverTimes;
    if (times.length < 4) return null;
    const gaps = times.slice(1).map((t, i) => t - times[i]).sort((a, b) => a - b);
    const median = gaps[gaps.length >> 1];
    return median <= this.hold.maxIntervalMs ? median : null;
  }

  // Milliseconds to hold the waiting hover for a fresher one (see the top), or 0 to decode it now.
  holdFor(slot, now = performance.now()) {
    const interval = this.eventInterval();
    if (interval === null || now - slot.time < this.hold.minAgeMs) return 0;
    return Math.max(0, slot.time + interval + this.hold.slackMs - now);
  }

  // True from a hover's request until its decode is done (or it is dropped).
  get hoverPending() {
    return this.hoverRunning || this.hoverSlot !== null;
  }

  // A click made after a hover also makes that hover stale.
  dropHover() {
    if (this.hoverSlot) this.hoverSlot.resolve(null);
    this.hoverSlot = null;
    this.hoverTimes = [];
  }

  async pump(held = false) {
    if (this.busy) return;
    clearTimeout(this.holdTimer);
    this.holdTimer = null;
    if (!this.clicks.length && this.hoverSlot && !held) {
      const hold = this.holdFor(this.hoverSlot);
      if (hold > 0) {
        this.holdTimer = setTimeout(() => this.pump(true), hold);
        return;
      }
    }
    const job = this.clicks.shift() || this.hoverSlot;
    if (!job) {
      this.onIdle();
      return;
    }
    this.hoverRunning = job === this.hoverSlot;
    if (this.hoverRunning) this.hoverSlot = null;
    this.busy = true;
    try {
      const sent = performance.now();
      const result = await this.call("decode", job.args);
      result.sentAt = sent; // for the page's timing breakdown
      result.returnedAt = performance.now();
      job.resolve(result);
    } catch (error) {
      job.reject(error);
    } finally {
      this.busy = false;
      this.hoverRunning = false;
      this.pump();
    }
  }
}
