// Getting an image's embedding into the decoder worker. The GPU worker may still be computing it, so
// this waits for the image's status events (the page passes them on from the websocket) and reports
// queued / computing on the way. The worker keeps the last few embeddings (LRU), so an image seen or
// prefetched before loads at once.
import { api } from "./api.js";

const MISSED_EVENT_MS = 5000; // look again even without an event, in case a websocket event was missed

export class EmbeddingLoader {
  constructor(decoder, decoderReady) {
    this.decoder = decoder;
    this.decoderReady = decoderReady;
    this.waiters = new Map(); // image id -> resolve callbacks, woken by image.status events
  }

  statusChanged(imageId) {
    (this.waiters.get(imageId) || []).forEach((resolve) => resolve());
    this.waiters.delete(imageId);
  }

  // Loads the embedding into the worker unless it is there already.
  async ensure(imageId, onStatus = () => {}) {
    if (await this.decoder.hasEmbedding(imageId)) return;
    const bytes = await this.download(imageId, onStatus);
    await this.decoderReady;
    await this.decoder.setEmbedding(imageId, bytes);
  }

  // The ready embedding's bytes; `onStatus` hears about queued / computing on the way.
  async download(imageId, onStatus) {
    for (;;) {
      const detail = await api(`/api/v1/images/${imageId}/`);
      if (detail.status === "ready" && detail.embedding_url) {
        const response = await fetch(detail.embedding_url, { credentials: "same-origin" });
        if (!response.ok) throw new Error(`embedding download failed (HTTP ${response.status})`);
        return response.arrayBuffer();
      }
      if (detail.status === "failed") throw new Error(`the embedding failed: ${detail.error}`);
      onStatus(detail.status);
      await this.nextStatus(imageId);
    }
  }

  nextStatus(imageId) {
    return new Promise((resolve) => {
      this.waiters.set(imageId, [...(this.waiters.get(imageId) || []), resolve]);
      setTimeout(resolve, MISSED_EVENT_MS);
    });
  }
}
