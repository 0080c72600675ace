// Web Worker: runs SAM's prompt encoder + mask decoder (the app's ONNX file) in onnxruntime-web, so the
// page never blocks while a mask is computed. One message in, one message out, tagged with its id.
import * as ort from "../vendor/ort/ort.wasm.min.mjs";
import { decodeEmbedding } from "./embedding.js";
import { toModelFrame } from "./coords.js";

const LOW_RES = 256;
let session = null;
let modelKey = null;
const embeddings = new Map(); // image id -> ort.Tensor, a few at most (the page asks for what it needs)
const MAX_EMBEDDINGS = 4;

async function init({ decoderUrl, model, ortBase }) {
  ort.env.wasm.wasmPaths = ortBase;
  // Threads need SharedArrayBuffer, which the browser only grants to cross-origin isolated pages.
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  const response = await fetch(decoderUrl);
  if (!response.ok) throw new Error(`decoder download failed (HTTP ${response.status})`);
  session = await ort.InferenceSession.create(new Uint8Array(await response.arrayBuffer()), {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  modelKey = model;
  return { threads: ort.env.wasm.numThreads };
}

async function setEmbedding({ imageId, buffer }) {
  const embedding = await decodeEmbedding(buffer);
  if (embedding.model !== modelKey) {
    throw new Error(`embedding of model ${embedding.model} cannot be used with the ${modelKey} decoder`);
  }
  embeddings.delete(imageId);
  embeddings.set(imageId, new ort.Tensor("float32", embedding.data, embedding.shape));
  while (embeddings.size > MAX_EMBEDDINGS) embeddings.delete(embeddings.keys().next().value);
  return {};
}

// Prompts laid out as SamPredictor does: points, then the box corners (labels 2, 3) or a padding point.
function promptTensors(points, box, height, width) {
  const count = points.length + (box ? 2 : 1);
  const coords = new Float32Array(count * 2);
  const labels = new Float32Array(count);
  points.forEach(([x, y, label], i) => {
    [coords[2 * i], coords[2 * i + 1]] = toModelFrame([x, y], height, width);
    labels[i] = label;
  });
  const k = points.length;
  if (box) {
    [coords[2 * k], coords[2 * k + 1]] = toModelFrame([box[0], box[1]], height, width);
    [coords[2 * k + 2], coords[2 * k + 3]] = toModelFrame([box[2], box[3]], height, width);
    labels[k] = 2;
    labels[k + 1] = 3;
  } else {
    labels[k] = -1;
  }
  return {
    point_coords: new ort.Tensor("float32", coords, [1, count, 2]),
    point_labels: new ort.Tensor("float32", labels, [1, count]),
  };
}

async function decode({ imageId, points, box, maskInput, multimask, height, width }) {
  const embedding = embeddings.get(imageId);
  if (!embedding) throw new Error(`no embedding loaded for image ${imageId}`);
  const started = performance.now();
  const feeds = {
    image_embeddings: embedding,
    ...promptTensors(points, box, height, width),
    mask_input: new ort.Tensor("float32", maskInput || new Float32Array(LOW_RES * LOW_RES), [1, 1, LOW_RES, LOW_RES]),
    has_mask_input: new ort.Tensor("float32", new Float32Array([maskInput ? 1 : 0]), [1]),
    orig_im_size: new ort.Tensor("float32", new Float32Array([height, width]), [2]),
  };
  const out = await session.run(feeds);
  // Token 0 is the single-mask answer; tokens 1..3 are the multimask candidates (as SamPredictor).
  const tokens = multimask ? [1, 2, 3] : [0];
  const allScores = out.iou_predictions.data;
  const candidates = tokens
    .map((token) => ({ token, score: allScores[token] }))
    .sort((a, b) => b.score - a.score)
    .map(({ token, score }) => {
      const plane = height * width;
      const logits = out.masks.data.subarray(token * plane, (token + 1) * plane);
      const mask = new Uint8Array(plane);
      for (let i = 0; i < plane; i++) mask[i] = logits[i] > 0 ? 1 : 0;
      const lowRes = out.low_res_masks.data.slice(token * LOW_RES * LOW_RES, (token + 1) * LOW_RES * LOW_RES);
      return { token, score, mask, lowRes };
    });
  return { candidates, ms: performance.now() - started };
}

const handlers = { init, setEmbedding, decode };

self.onmessage = async ({ data }) => {
  const { id, type, ...args } = data;
  try {
    const result = await handlers[type](args);
    const transfer = (result.candidates || []).flatMap((c) => [c.mask.buffer, c.lowRes.buffer]);
    self.postMessage({ id, ok: true, result }, transfer);
  } catch (error) {
    self.postMessage({ id, ok: false, error: String(error && error.message ? error.message : error) });
  }
};
