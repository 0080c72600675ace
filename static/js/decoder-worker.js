// Web Worker: runs SAM's prompt encoder + mask decoder in onnxruntime-web, so the page never blocks
// while a mask is computed. One message in, one message out, tagged with its id.
//
// Two ways to decode, both giving low-res logits for the page to keep and feed back:
// - the interactive pair (`graphs`: prepare + prompt, see segmentation/sam/onnx_decoder.py): the
//   image-only part of the first transformer layer is computed once per image and cached, so a hover
//   or a first click runs only the lean prompt graph; a click with a mask prompt runs both.
// - the full graph (`decoderUrl`), kept for the parity test against the official outputs.
// Full-resolution masks are made only on request (`upscale`), for the object being committed.
//
// Backend: WebGPU on a hardware GPU, else wasm (SIMD, a thread per core). onnxruntime-web ships one
// build per backend, so the build is imported in `init` once the backend is known.
import { decodeEmbedding } from "./embedding.js";
import { toModelFrame } from "./coords.js";
import { LOW_RES, upscaleMask } from "./upscale.js";

let ort = null; // the onnxruntime-web build of the chosen backend
let session = null; // the full graph, or null
let prepareSession = null;
let promptSession = null;
let modelKey = null;
const embeddings = new Map(); // image id -> ort.Tensor, least recently used first
const MAX_EMBEDDINGS = 4;
const prepared = new Map(); // image id -> the prepare graph's outputs without a mask prompt

async function fetchModel(url) {
  // The browser's HTTP cache keeps these (the app sends Cache-Control and an ETag).
  const response = await fetch(url);
  if (!response.ok) throw new Error(`decoder download failed (HTTP ${response.status})`);
  return new Uint8Array(await response.arrayBuffer());
}

const BUILDS = { wasm: "ort.wasm.min.mjs", webgpu: "ort.webgpu.min.mjs" };

// "webgpu" when the browser offers a hardware GPU adapter. A software adapter (SwiftShader, llvmpipe:
// the GPU emulated on the CPU) is many times slower than wasm, so it is used only when asked for.
async function chooseBackend(requested) {
  if (requested in BUILDS) return requested;
  try {
    const adapter = await self.navigator.gpu?.requestAdapter();
    if (!adapter) return "wasm";
    const info = adapter.info || {};
    const software = info.isFallbackAdapter || /swiftshader|llvmpipe|software/i.test(`${info.architecture} ${info.description}`);
    return software ? "wasm" : "webgpu";
  } catch {
    return "wasm";
  }
}

async function createSessions(backend, { decoderUrl, graphs, ortBase, threads }) {
  ort = await import(`${ortBase}${BUILDS[backend]}`);
  ort.env.wasm.wasmPaths = ortBase;
  // Threads need SharedArrayBuffer, which the browser only grants to cross-origin isolated pages. Every
  // core, up to 4: the page's own work per hover (one message, one 256x256 tile) is small, and on 2 cores
  // a second decoder thread makes the prompt graph ~1.6x faster (benchmarks/RESULTS.md, "Browser").
  // Capped at 4, as onnxruntime-web caps its own default. With WebGPU they run the few CPU-side kernels.
  const cores = navigator.hardwareConcurrency || 1;
  const available = self.crossOriginIsolated ? Math.max(1, Math.min(4, cores)) : 1;
  ort.env.wasm.numThreads = self.crossOriginIsolated && threads ? Math.min(threads, 4) : available;
  const options = { executionProviders: [backend], graphOptimizationLevel: "all" };
  if (graphs) {
    const [prepare, prompt] = await Promise.all([fetchModel(graphs.prepare), fetchModel(graphs.prompt)]);
    prepareSession = await ort.InferenceSession.create(prepare, options);
    promptSession = await ort.InferenceSession.create(prompt, options);
  } else {
    session = await ort.InferenceSession.create(await fetchModel(decoderUrl), options);
  }
}

// backend: "webgpu", "wasm", or absent to choose (see chooseBackend). A failing WebGPU start (no
// device, a lost context, an unsupported kernel) falls back to wasm.
async function init({ model, backend, ...args }) {
  const started = performance.now();
  let chosen = await chooseBackend(backend);
  try {
    await createSessions(chosen, args);
  } catch (error) {
    if (chosen !== "webgpu") throw error;
    console.warn(`WebGPU decoder failed to start, using wasm: ${error.message || error}`);
    chosen = "wasm";
    await createSessions(chosen, args);
  }
  modelKey = model;
  return { backend: chosen, threads: ort.env.wasm.numThreads, ms: performance.now() - started };
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

// The embedding of `imageId`, marked most recently used; cached prepare outputs follow evictions.
function embeddingFor(imageId) {
  const embedding = embeddings.get(imageId);
  if (!embedding) throw new Error(`no embedding loaded for image ${imageId}`);
  embeddings.delete(imageId);
  embeddings.set(imageId, embedding);
  for (const id of prepared.keys()) if (!embeddings.has(id)) prepared.delete(id);
  return embedding;
}

function maskFeeds(maskInput) {
  return {
    mask_input: new ort.Tensor("float32", maskInput || new Float32Array(LOW_RES * LOW_RES), [1, 1, LOW_RES, LOW_RES]),
    has_mask_input: new ort.Tensor("float32", new Float32Array([maskInput ? 1 : 0]), [1]),
  };
}

async function prepare(imageId, maskInput) {
  const embedding = embeddingFor(imageId);
  if (maskInput) return prepareSession.run({ image_embeddings: embedding, ...maskFeeds(maskInput) });
  if (!prepared.has(imageId)) prepared.set(imageId, await prepareSession.run({ image_embeddings: embedding, ...maskFeeds(null) }));
  return prepared.get(imageId);
}

// -> {iou_predictions, low_res_masks} for one prompt set.
async function run({ imageId, points, box, maskInput, height, width }) {
  const prompts = promptTensors(points, box, height, width);
  if (!promptSession) {
    const feeds = {
      image_embeddings: embeddingFor(imageId),
      ...prompts,
      ...maskFeeds(maskInput),
      orig_im_size: new ort.Tensor("float32", new Float32Array([height, width]), [2]),
    };
    return session.run(feeds, ["iou_predictions", "low_res_masks"]);
  }
  return promptSession.run({ ...(await prepare(imageId, maskInput)), ...prompts });
}

// Candidates best first: token 0 is the single-mask answer, tokens 1..3 the multimask ones (as
// SamPredictor); `keep` limits how many come back (hover needs one).
async function decode({ multimask, keep = 3, ...args }) {
  const started = performance.now();
  const out = await run(args);
  const scores = out.iou_predictions.data;
  const plane = LOW_RES * LOW_RES;
  const candidates = (multimask ? [1, 2, 3] : [0])
    .map((token) => ({ token, score: scores[token] }))
    .sort((a, b) => b.score - a.score)
    .slice(0, keep)
    .map(({ token, score }) => ({ token, score, lowRes: out.low_res_masks.data.slice(token * plane, (token + 1) * plane) }));
  return { candidates, ms: performance.now() - started };
}

function upscale({ lowRes, height, width }) {
  const started = performance.now();
  return { mask: upscaleMask(lowRes, height, width), ms: performance.now() - started };
}

const handlers = { init, setEmbedding, decode, upscale, hasEmbedding: ({ imageId }) => embeddings.has(imageId) };

self.onmessage = async ({ data }) => {
  const { id, type, ...args } = data;
  try {
    const result = await handlers[type](args);
    const transfer = (result?.candidates || []).map((c) => c.lowRes.buffer);
    if (result?.mask) transfer.push(result.mask.buffer);
    self.postMessage({ id, ok: true, result }, transfer);
  } catch (error) {
    self.postMessage({ id, ok: false, error: String(error && error.message ? error.message : error) });
  }
};
