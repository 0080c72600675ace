// The annotator: hover previews a mask, clicks add positive/negative points, a drag draws a box, Enter
// saves the object with its label, Esc clears. Decoding runs in a Web Worker (decoder.js).
import { api } from "./api.js";
import { Decoder } from "./decoder.js";
import { connectProject } from "./live.js";
import { colourFor, paintMasks, paintOutline, paintPrompts } from "./overlay.js";
import { decodeMask, encodeMask } from "./rle.js";

const root = document.getElementById("annotator");
const imageId = Number(root.dataset.imageId);
const projectId = Number(root.dataset.projectId);
const width = Number(root.dataset.width);
const height = Number(root.dataset.height);
const modelKey = root.dataset.model;
const canEdit = root.dataset.role !== "viewer";
const staticBase = root.dataset.static;

const stage = document.getElementById("stage");
const imageCanvas = document.getElementById("image-canvas");
const maskCanvas = document.getElementById("mask-canvas");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
const maskList = document.getElementById("mask-list");
const saveForm = document.getElementById("save-form");
const saveButton = document.getElementById("save-button");
const labelInput = document.getElementById("label-input");

const DRAG_THRESHOLD = 4; // screen pixels before a press becomes a box

const state = {
  ready: false,
  points: [], // [x, y, label] in original pixels
  box: null, // [x0, y0, x1, y1]
  current: null, // {mask, score, lowRes}
  hover: null, // preview before the first click
  saved: [], // [{id, label, mask}]
  drag: null,
};

// --- status ------------------------------------------------------------------------------------------

function setStatus(text, kind) {
  statusLine.textContent = text;
  statusLine.dataset.state = kind;
}

function showError(message) {
  errorLine.textContent = message;
  errorLine.hidden = !message;
}

// --- layout: canvases at image resolution, fitted to the stage -----------------------------------------

for (const canvas of [imageCanvas, maskCanvas]) {
  canvas.width = width;
  canvas.height = height;
}
const savedLayer = document.createElement("canvas");
savedLayer.width = width;
savedLayer.height = height;

function fit() {
  const scale = Math.min(stage.clientWidth / width, stage.clientHeight / height, 1e9);
  for (const canvas of [imageCanvas, maskCanvas]) {
    canvas.style.width = `${width * scale}px`;
    canvas.style.height = `${height * scale}px`;
  }
}
window.addEventListener("resize", fit);
fit();

function toImage(event) {
  const rect = maskCanvas.getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * width;
  const y = ((event.clientY - rect.top) / rect.height) * height;
  return [Math.min(Math.max(x, 0), width), Math.min(Math.max(y, 0), height)];
}

// --- drawing -----------------------------------------------------------------------------------------

function redrawSaved() {
  const ctx = savedLayer.getContext("2d");
  paintMasks(ctx, state.saved.map((m, i) => ({ mask: m.mask, colour: colourFor(i), alpha: 0.35 })), width, height);
  draw();
}

function draw() {
  const ctx = maskCanvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const live = state.current || state.hover;
  if (live) {
    const layer = document.createElement("canvas");
    layer.width = width;
    layer.height = height;
    const layerCtx = layer.getContext("2d");
    paintMasks(layerCtx, [{ mask: live.mask, colour: [56, 189, 248], alpha: state.current ? 0.5 : 0.35 }], width, height);
    paintOutline(layerCtx, live.mask, width, height, [255, 255, 255]);
    ctx.drawImage(savedLayer, 0, 0);
    ctx.drawImage(layer, 0, 0);
  } else {
    ctx.drawImage(savedLayer, 0, 0);
  }
  const scale = width / maskCanvas.getBoundingClientRect().width;
  const box = state.drag && state.drag.moved ? state.drag.box : state.box;
  paintPrompts(ctx, state.points, box, scale);
  if (saveButton) saveButton.disabled = !state.current;
}

// --- decoding ----------------------------------------------------------------------------------------

const decoder = new Decoder(`${staticBase}js/decoder-worker.js`);

function request(points, box) {
  // One click: ask for three candidates and take the best, as SamPredictor's multimask is meant to be used.
  const multimask = points.length === 1 && !box;
  return { imageId, points, box, maskInput: null, multimask, height, width };
}

async function refine() {
  decoder.dropHover();
  state.hover = null;
  if (!state.points.length && !state.box) {
    state.current = null;
    draw();
    return;
  }
  try {
    const { candidates } = await decoder.decode(request(state.points, state.box));
    state.current = candidates[0];
    root.dataset.maskScore = String(candidates[0].score);
    root.dataset.decodes = String(Number(root.dataset.decodes || 0) + 1);
    draw();
  } catch (error) {
    showError(error.message);
  }
}

async function hoverAt(point) {
  if (!state.ready || state.points.length || state.box || state.drag) return;
  try {
    const result = await decoder.hover(request([[point[0], point[1], 1]], null));
    if (!result || state.points.length || state.box) return; // stale
    state.hover = result.candidates[0];
    draw();
  } catch (error) {
    showError(error.message);
  }
}

// --- pointer -----------------------------------------------------------------------------------------

maskCanvas.addEventListener("contextmenu", (event) => event.preventDefault());

maskCanvas.addEventListener("pointerdown", (event) => {
  if (!state.ready || (event.button !== 0 && event.button !== 2)) return;
  const start = toImage(event);
  state.drag = { startScreen: [event.clientX, event.clientY], start, moved: false, box: null, button: event.button, alt: event.altKey };
  maskCanvas.setPointerCapture(event.pointerId);
});

maskCanvas.addEventListener("pointermove", (event) => {
  const point = toImage(event);
  const drag = state.drag;
  if (drag) {
    const distance = Math.hypot(event.clientX - drag.startScreen[0], event.clientY - drag.startScreen[1]);
    if (drag.button === 0 && (drag.moved || distance > DRAG_THRESHOLD)) {
      drag.moved = true;
      drag.box = [Math.min(drag.start[0], point[0]), Math.min(drag.start[1], point[1]), Math.max(drag.start[0], point[0]), Math.max(drag.start[1], point[1])];
      draw();
    }
    return;
  }
  hoverAt(point);
});

maskCanvas.addEventListener("pointerup", (event) => {
  const drag = state.drag;
  state.drag = null;
  if (!drag) return;
  if (drag.moved) {
    state.box = drag.box;
  } else {
    const negative = drag.button === 2 || drag.alt;
    state.points.push([drag.start[0], drag.start[1], negative ? 0 : 1]);
  }
  refine();
});

maskCanvas.addEventListener("pointerleave", () => {
  if (state.hover) {
    decoder.dropHover();
    state.hover = null;
    draw();
  }
});

// --- saving and the objects list ----------------------------------------------------------------------

async function save() {
  if (!canEdit || !state.current) return;
  const label = labelInput.value.trim();
  if (!label) {
    showError("Give the object a label first.");
    labelInput.focus();
    return;
  }
  try {
    await api(`/api/v1/images/${imageId}/masks/`, {
      method: "POST",
      json: {
        label,
        rle: encodeMask(state.current.mask, height, width),
        points: state.points,
        box: state.box,
        score: state.current.score,
      },
    });
    showError("");
    clearPrompts();
    await loadMasks();
  } catch (error) {
    showError(`Not saved: ${error.message}`);
  }
}

function clearPrompts() {
  state.points = [];
  state.box = null;
  state.current = null;
  draw();
}

async function loadMasks() {
  const masks = await api(`/api/v1/images/${imageId}/masks/`);
  state.saved = masks.map((m) => ({ id: m.id, label: m.label, mask: decodeMask(m.rle) }));
  maskList.replaceChildren(...masks.map((m, i) => maskRow(m, i)));
  root.dataset.savedMasks = String(masks.length);
  redrawSaved();
}

function maskRow(mask, index) {
  const row = document.createElement("li");
  row.dataset.maskId = mask.id;
  const [r, g, b] = colourFor(index);
  row.innerHTML = `<span class="swatch"></span><span class="label"></span><a class="png">PNG</a>`;
  row.querySelector(".swatch").style.background = `rgb(${r},${g},${b})`;
  row.querySelector(".label").textContent = mask.label;
  const link = row.querySelector(".png");
  link.href = `/api/v1/masks/${mask.id}/png`;
  link.download = "";
  if (canEdit) {
    const remove = document.createElement("button");
    remove.textContent = "Delete";
    remove.className = "delete";
    remove.addEventListener("click", async () => {
      await api(`/api/v1/masks/${mask.id}/`, { method: "DELETE" });
      loadMasks();
    });
    row.append(remove);
  }
  return row;
}

if (saveForm) saveForm.addEventListener("submit", (event) => { event.preventDefault(); save(); });

document.addEventListener("keydown", (event) => {
  if (event.target === labelInput && event.key !== "Enter" && event.key !== "Escape") return;
  if (event.key === "Enter") {
    event.preventDefault();
    save();
  } else if (event.key === "Escape") {
    clearPrompts();
  } else if (event.key === "ArrowRight" && root.dataset.next) {
    location.href = `/images/${root.dataset.next}/`;
  } else if (event.key === "ArrowLeft" && root.dataset.previous) {
    location.href = `/images/${root.dataset.previous}/`;
  }
});

// --- start-up: image, decoder and embedding in parallel -------------------------------------------------

async function loadImage() {
  const img = new Image();
  img.src = `/api/v1/images/${imageId}/file`;
  await img.decode();
  imageCanvas.getContext("2d").drawImage(img, 0, 0);
}

async function waitForEmbeddingUrl() {
  for (;;) {
    const detail = await api(`/api/v1/images/${imageId}/`);
    if (detail.status === "ready" && detail.embedding_url) return detail.embedding_url;
    if (detail.status === "failed") throw new Error(`the embedding failed: ${detail.error}`);
    setStatus(detail.status === "queued" ? "embedding queued…" : "computing embedding…", "loading");
    await new Promise((resolve) => {
      statusWaiters.push(resolve);
      setTimeout(resolve, 5000); // in case a websocket event was missed
    });
  }
}

const statusWaiters = [];
connectProject(projectId, {
  onEvent: (event) => {
    if (event.image !== imageId) return;
    if (event.type === "image.status") statusWaiters.splice(0).forEach((resolve) => resolve());
    if (event.type === "mask.saved" || event.type === "mask.deleted") loadMasks();
  },
  onState: (s) => { root.dataset.live = s; if (s === "offline") setStatus("connection lost — reconnecting…", "offline"); },
  onReconnect: () => loadMasks(),
});

async function start() {
  setStatus("loading decoder…", "loading");
  const decoderReady = decoder.init({
    decoderUrl: `/api/v1/models/${modelKey}/decoder.onnx`,
    model: modelKey,
    ortBase: `${staticBase}vendor/ort/`,
  });
  const embeddingBuffer = waitForEmbeddingUrl().then(async (url) => {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`embedding download failed (HTTP ${response.status})`);
    return response.arrayBuffer();
  });
  await Promise.all([loadImage(), loadMasks()]);
  await decoderReady;
  setStatus("loading embedding…", "loading");
  await decoder.setEmbedding(imageId, await embeddingBuffer);
  state.ready = true;
  root.dataset.ready = "1";
  setStatus("ready — hover over an object", "ready");
}

start().catch((error) => {
  setStatus("error", "error");
  showError(error.message);
});
