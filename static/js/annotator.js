// The annotator page: wires the decoder worker, the prompt chain, the view and the objects list to the
// DOM. Hover previews a mask, clicks add points, a drag draws a box, Enter saves the object with the
// current label; images switch in place so the decoder and cached embeddings stay warm.
import { api } from "./api.js";
import { decodeChain } from "./chain.js";
import { inputSize } from "./coords.js";
import { Decoder } from "./decoder.js";
import { Labels } from "./labels.js";
import { connectProject } from "./live.js";
import { renderObjects } from "./objects.js";
import { hexToRgb, paintLowRes, paintObjects, renderPrompts } from "./overlay.js";
import { decodeMask, encodeMask } from "./rle.js";
import { View } from "./view.js";

const $ = (id) => document.getElementById(id);
const root = $("annotator");
const projectId = Number(root.dataset.projectId);
const modelKey = root.dataset.model;
const canEdit = root.dataset.role !== "viewer";
const staticBase = root.dataset.static;

const stage = $("stage");
const imageCanvas = $("image-canvas");
const maskCanvas = $("mask-canvas");
const liveCanvas = $("live-canvas");
const liveClip = liveCanvas.parentElement;
const promptLayer = $("prompt-layer");
const labelInput = $("label-input");
const saveButton = $("save-button");
const maskList = $("mask-list");

const DRAG_THRESHOLD = 4; // screen pixels before a press becomes a box
const LIVE_COLOUR = [56, 189, 248];
const EMPTY = { points: [], box: null, candidates: [] };

const state = {
  image: null, // {id, width, height, name}
  generation: 0, // bumps on every image switch; late answers for an older image are dropped
  ready: false,
  history: [EMPTY], // prompt states, see chain.js
  index: 0,
  choice: 0, // which candidate of a single click is shown and saved
  hover: null, // {point, candidates} before the first prompt
  objects: [], // saved masks [{id, label, area, mask, visible, points, box}]
  hidden: new Set(),
  selectedId: null,
  highlightId: null,
  drag: null,
  pan: null,
  space: false,
  images: [], // the project's image ids in order, for previous/next
};
const labels = new Labels(projectId);
// For tests and benchmarks/browser.py: timings of hover paints and decodes, milliseconds.
const stats = (window.annotatorStats = { hoverToPaint: [], decodeMs: [], hoverDecodeMs: [], firstMaskAt: null });
const current = () => state.history[state.index];

// --- status and errors ----------------------------------------------------------------------------------

function chip(id, text, kind) {
  const el = $(id);
  el.textContent = text;
  el.dataset.state = kind;
}

function setStatus(text, kind) {
  chip("status", text, kind);
  $("stage-message").textContent = text;
  $("stage-message").hidden = kind === "ready";
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

const report = (error) => showError(error.message || String(error));

// --- view: zoom, pan, canvases ---------------------------------------------------------------------------

const view = new View(stage, $("view"), (v) => {
  $("zoom-level").textContent = `${Math.round(v.zoom * 100)}%`;
  root.dataset.zoom = v.zoom.toFixed(4);
  drawPrompts();
});

function layoutImage(width, height) {
  for (const canvas of [imageCanvas, maskCanvas]) {
    canvas.width = width;
    canvas.height = height;
  }
  // The live canvas covers the model's padded 1024 square; the clip shows the image's part of it.
  const [h, w] = inputSize(height, width);
  liveCanvas.style.width = `${(1024 * width) / w}px`;
  liveCanvas.style.height = `${(1024 * height) / h}px`;
  liveClip.style.width = `${width}px`;
  liveClip.style.height = `${height}px`;
  promptLayer.setAttribute("viewBox", `0 0 ${width} ${height}`);
  promptLayer.setAttribute("width", width);
  promptLayer.setAttribute("height", height);
  view.setImage(width, height);
}

// --- drawing ---------------------------------------------------------------------------------------------

function drawObjects() {
  const { width, height } = state.image;
  const emphasised = state.highlightId ?? state.selectedId;
  const visible = state.objects.filter((o) => !state.hidden.has(o.id));
  paintObjects(
    maskCanvas.getContext("2d"),
    visible.map((o) => ({ mask: o.mask, colour: labels.colour(o.label), emphasis: o.id === emphasised ? 1 : 0 })),
    width,
    height,
  );
}

function liveCandidate() {
  const s = current();
  if (s.candidates.length) return s.candidates[Math.min(state.choice, s.candidates.length - 1)];
  return state.hover ? state.hover.candidates[0] : null;
}

function drawLive() {
  const live = liveCandidate();
  liveCanvas.hidden = !live;
  if (!live) return;
  const colour = current().candidates.length ? hexToRgb(labelColour()) : LIVE_COLOUR;
  paintLowRes(liveCanvas.getContext("2d"), live.lowRes, colour, current().candidates.length ? 0.55 : 0.4);
}

function drawPrompts() {
  const s = current();
  const dragBox = state.drag && state.drag.moved ? state.drag.box : null;
  renderPrompts(promptLayer, { points: s.points, box: s.box, dragBox }, view.zoom);
}

function labelColour() {
  const label = labels.find(labelInput ? labelInput.value : "");
  return label ? label.color : "#38bdf8";
}

function updatePanel() {
  const s = current();
  const live = liveCandidate();
  if (saveButton) saveButton.disabled = !s.candidates.length;
  $("undo-button").disabled = state.index === 0;
  $("redo-button").disabled = state.index === state.history.length - 1;
  $("clear-button").disabled = !s.points.length && !s.box;
  const info = $("current-info");
  if (s.candidates.length) {
    const positives = s.points.filter((p) => p[2]).length;
    const parts = [`${positives} positive`, `${s.points.length - positives} negative`];
    if (s.box) parts.push("box");
    info.textContent = `${parts.join(" · ")} — predicted IoU ${live.score.toFixed(3)}`;
  } else {
    info.textContent = state.hover ? `Preview — predicted IoU ${state.hover.candidates[0].score.toFixed(3)}` : "Hover over the image, then click.";
  }
  const box = $("candidates");
  box.hidden = s.candidates.length < 2;
  box.replaceChildren(
    ...s.candidates.map((c, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = i === state.choice ? "candidate active" : "candidate";
      b.textContent = `${i + 1} · ${c.score.toFixed(2)}`;
      b.title = "Candidate masks for one click, best first (Tab cycles)";
      b.addEventListener("click", () => choose(i));
      return b;
    }),
  );
  root.dataset.points = String(s.points.length);
  root.dataset.candidates = String(s.candidates.length);
  root.dataset.choice = String(state.choice);
  root.dataset.historyIndex = String(state.index);
  if (live) root.dataset.maskScore = String(live.score);
}

function draw() {
  drawLive();
  drawPrompts();
  updatePanel();
}

// --- decoding: the prompt chain, one change at a time in order --------------------------------------------

const decoder = new Decoder(`${staticBase}js/decoder-worker.js`);
let queue = Promise.resolve();

function request(args) {
  const { id, width, height } = state.image;
  return { imageId: id, height, width, ...args };
}

async function decode(args) {
  const result = await decoder.decode(request(args));
  stats.decodeMs.push(result.ms);
  return result;
}

// Runs `step` after every earlier change, so clicks apply in order, each on the state before it.
function enqueue(step) {
  const generation = state.generation;
  queue = queue
    .then(() => (generation === state.generation ? step() : null))
    .catch(report);
  return queue;
}

function pushState(next) {
  state.history = [...state.history.slice(0, state.index + 1), next];
  state.index = state.history.length - 1;
  state.choice = 0;
  draw();
}

// change(previousState) -> {points, box}: the new prompts, decoded with the chain rule.
function changePrompts(change) {
  decoder.dropHover();
  const hover = state.hover;
  state.hover = null;
  const generation = state.generation;
  return enqueue(async () => {
    const previous = current();
    const { points, box } = change(previous);
    // The hover preview at the very spot of a first click already is that click's first step.
    const reuse = hover && !box && points.length >= 1 && hover.point[0] === points[0][0] && hover.point[1] === points[0][1] && points[0][2] === 1;
    const next = await decodeChain(decode, previous, points, box, reuse ? hover.candidates : null);
    if (generation !== state.generation) return;
    pushState(next);
    stats.firstMaskAt ??= performance.now();
    root.dataset.decodes = String(Number(root.dataset.decodes || 0) + 1);
  });
}

const addPoint = (point) => changePrompts((s) => ({ points: [...s.points, point], box: s.box }));
const setBox = (box) => changePrompts((s) => ({ points: s.points, box }));

function undo() {
  enqueue(() => {
    if (state.index > 0) state.index--;
    state.choice = 0;
    draw();
  });
}

function redo() {
  enqueue(() => {
    if (state.index < state.history.length - 1) state.index++;
    state.choice = 0;
    draw();
  });
}

function clearPrompts() {
  enqueue(() => {
    if (current().points.length || current().box) pushState(EMPTY);
  });
}

function choose(index) {
  const n = current().candidates.length;
  if (n < 2) return;
  state.choice = ((index % n) + n) % n;
  draw();
}

async function hoverAt(point, eventTime) {
  const s = current();
  if (!state.ready || s.points.length || s.box || state.drag || state.pan) return;
  const generation = state.generation;
  try {
    const result = await decoder.hover(request({ points: [[point[0], point[1], 1]], box: null, maskInput: null, multimask: true }));
    if (!result || generation !== state.generation || current().points.length || current().box || state.drag) return; // stale
    state.hover = { point, candidates: result.candidates };
    stats.hoverDecodeMs.push(result.ms);
    drawLive();
    updatePanel();
    stats.hoverToPaint.push(performance.now() - eventTime);
    stats.firstMaskAt ??= performance.now(); // since navigation start
    root.dataset.hovers = String(stats.hoverToPaint.length);
  } catch (error) {
    report(error);
  }
}

function dropHover() {
  decoder.dropHover();
  if (!state.hover) return;
  state.hover = null;
  draw();
}

// --- pointer: points, boxes, pan ---------------------------------------------------------------------------

stage.addEventListener("contextmenu", (event) => event.preventDefault());

stage.addEventListener("pointerdown", (event) => {
  if (event.button === 1 || (event.button === 0 && state.space)) {
    state.pan = { x: event.clientX, y: event.clientY };
    stage.classList.add("panning");
    stage.setPointerCapture(event.pointerId);
    event.preventDefault();
    return;
  }
  if (!state.ready || (event.button !== 0 && event.button !== 2)) return;
  const start = view.toImage(event.clientX, event.clientY);
  if (!view.contains(start)) return;
  maskCanvas.focus({ preventScroll: true });
  state.drag = { screen: [event.clientX, event.clientY], start, moved: false, box: null, negative: event.button === 2 || event.altKey, button: event.button };
  stage.setPointerCapture(event.pointerId);
});

stage.addEventListener("pointermove", (event) => {
  if (state.pan) {
    view.panBy(event.clientX - state.pan.x, event.clientY - state.pan.y);
    state.pan = { x: event.clientX, y: event.clientY };
    return;
  }
  const point = view.toImage(event.clientX, event.clientY);
  const inside = view.contains(point);
  showCursor(inside ? point : null);
  const drag = state.drag;
  if (drag) {
    const distance = Math.hypot(event.clientX - drag.screen[0], event.clientY - drag.screen[1]);
    if (drag.button === 0 && (drag.moved || distance > DRAG_THRESHOLD)) {
      if (!drag.moved) dropHover();
      drag.moved = true;
      const [x, y] = clampToImage(point);
      drag.box = [Math.min(drag.start[0], x), Math.min(drag.start[1], y), Math.max(drag.start[0], x), Math.max(drag.start[1], y)];
      drawPrompts();
    }
    return;
  }
  if (inside) hoverAt(point, event.timeStamp);
  else dropHover();
});

function endPointer() {
  const drag = state.drag;
  state.drag = null;
  if (state.pan) {
    state.pan = null;
    stage.classList.remove("panning");
    return;
  }
  if (!drag) return;
  if (drag.moved) {
    if (drag.box[2] - drag.box[0] >= 1 && drag.box[3] - drag.box[1] >= 1) setBox(drag.box);
    else drawPrompts();
  } else {
    addPoint([drag.start[0], drag.start[1], drag.negative ? 0 : 1]);
  }
}

stage.addEventListener("pointerup", endPointer);
stage.addEventListener("pointercancel", () => { state.drag = null; state.pan = null; drawPrompts(); });
stage.addEventListener("pointerleave", () => { if (!state.drag) dropHover(); });

// The pixel under the pointer, written once per frame at most (pointer events come faster).
let cursorFrame = null;
function showCursor(point) {
  if (cursorFrame === null) {
    cursorFrame = requestAnimationFrame(() => {
      cursorFrame = null;
      $("cursor-pos").textContent = showCursor.point ? `${Math.floor(showCursor.point[0])}, ${Math.floor(showCursor.point[1])}` : "";
    });
  }
  showCursor.point = point;
}

function clampToImage([x, y]) {
  return [Math.min(Math.max(x, 0), state.image.width), Math.min(Math.max(y, 0), state.image.height)];
}

// --- saving, the label set and the objects list -------------------------------------------------------------

async function commit() {
  if (!canEdit) return;
  await queue; // the clicks made so far come first
  const s = current();
  if (!s.candidates.length || !state.image) return;
  const label = (labelInput.value || "").trim();
  if (!label) {
    showError("Give the object a label first.");
    labelInput.focus();
    return;
  }
  const image = state.image;
  const chosen = s.candidates[Math.min(state.choice, s.candidates.length - 1)];
  saveButton.disabled = true;
  try {
    // Full resolution only now, for the object being kept.
    const { mask } = await decoder.upscale(chosen.lowRes, image.height, image.width);
    await labels.ensure(label);
    await api(`/api/v1/images/${image.id}/masks/`, {
      method: "POST",
      json: { label, rle: encodeMask(mask, image.height, image.width), points: s.points, box: s.box, score: chosen.score },
    });
    showError("");
    // Back to the image, so the shortcuts work again after typing a label.
    if (document.activeElement === labelInput) maskCanvas.focus({ preventScroll: true });
    state.history = [EMPTY];
    state.index = 0;
    state.choice = 0;
    draw();
    renderLabels();
    await loadMasks();
  } catch (error) {
    showError(`Not saved: ${error.message}`);
    updatePanel();
  }
}

async function loadMasks() {
  const image = state.image;
  const masks = await api(`/api/v1/images/${image.id}/masks/`);
  if (image !== state.image) return;
  state.objects = masks.map((m) => ({ id: m.id, label: m.label, area: m.area, points: m.points, box: m.box, mask: decodeMask(m.rle) }));
  if (!state.objects.some((o) => o.id === state.selectedId)) state.selectedId = null;
  if (state.objects.some((o) => o.label && !labels.find(o.label))) await labels.load();
  renderObjectList();
  drawObjects();
  root.dataset.savedMasks = String(masks.length);
}

function renderObjectList() {
  const objects = state.objects.map((o) => ({ ...o, visible: !state.hidden.has(o.id) }));
  renderObjects(maskList, objects, {
    labels,
    canEdit,
    selectedId: state.selectedId,
    on: {
      hover: (id) => { state.highlightId = id; drawObjects(); },
      select: (id) => { state.selectedId = state.selectedId === id ? null : id; renderObjectList(); drawObjects(); },
      toggle: (id) => toggleObject(id),
      relabel: (id, name) => relabel(id, name),
      remove: (id) => removeObject(id),
    },
  });
  $("object-count").textContent = String(objects.length);
  $("no-objects").hidden = objects.length > 0;
}

function toggleObject(id) {
  if (state.hidden.has(id)) state.hidden.delete(id);
  else state.hidden.add(id);
  renderObjectList();
  drawObjects();
}

async function relabel(id, name) {
  try {
    await api(`/api/v1/masks/${id}/`, { method: "PATCH", json: { label: name } });
    await loadMasks();
  } catch (error) {
    report(error);
  }
}

async function removeObject(id) {
  try {
    await api(`/api/v1/masks/${id}/`, { method: "DELETE" });
    if (state.selectedId === id) state.selectedId = null;
    await loadMasks();
  } catch (error) {
    report(error);
  }
}

function renderLabels() {
  const chips = labels.list.map((label, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "label-chip";
    b.classList.toggle("active", labelInput && label.name === labelInput.value.trim());
    b.style.setProperty("--label", label.color);
    b.innerHTML = `<span class="dot"></span><span class="name"></span>${i < 9 ? `<kbd>${i + 1}</kbd>` : ""}`;
    b.querySelector(".name").textContent = label.name;
    b.addEventListener("click", () => pickLabel(label.name));
    return b;
  });
  $("label-chips").replaceChildren(...chips);
  if (canEdit) $("label-options").replaceChildren(...labels.list.map((l) => new Option(l.name)));
}

function pickLabel(name) {
  if (!labelInput) return;
  labelInput.value = name;
  renderLabels();
  drawLive();
}

if ($("save-form")) $("save-form").addEventListener("submit", (event) => { event.preventDefault(); commit(); });
if (labelInput) labelInput.addEventListener("input", () => { renderLabels(); drawLive(); });

// --- keyboard ----------------------------------------------------------------------------------------------

function toggleHelp(show = $("help").hidden) {
  $("help").hidden = !show;
}

document.addEventListener("keydown", (event) => {
  const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement;
  if (event.key === " " && !typing) {
    state.space = true;
    stage.classList.add("pan-ready");
    event.preventDefault();
    return;
  }
  if (typing && event.key !== "Enter" && event.key !== "Escape") return;
  const ctrl = event.ctrlKey || event.metaKey;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (!$("help").hidden && (key === "Escape" || key === "?")) {
    toggleHelp(false);
  } else if (key === "Enter") {
    event.preventDefault();
    commit();
  } else if (key === "Escape") {
    if (typing) event.target.blur();
    clearPrompts();
  } else if (ctrl && ((key === "z" && event.shiftKey) || key === "y")) {
    event.preventDefault();
    redo();
  } else if (ctrl && key === "z") {
    event.preventDefault();
    undo();
  } else if (ctrl) {
    return;
  } else if (key === "Tab") {
    event.preventDefault();
    choose(state.choice + (event.shiftKey ? -1 : 1));
  } else if (key === "?") {
    toggleHelp();
  } else if (key === "+" || key === "=") {
    view.zoomCentre(1.25);
  } else if (key === "-") {
    view.zoomCentre(0.8);
  } else if (key === "0") {
    view.fit();
  } else if (key === "ArrowRight" || key === "PageDown") {
    go(+1);
  } else if (key === "ArrowLeft" || key === "PageUp") {
    go(-1);
  } else if (key === "h" && state.selectedId) {
    toggleObject(state.selectedId);
  } else if ((key === "Delete" || key === "Backspace") && state.selectedId && canEdit) {
    removeObject(state.selectedId);
  } else if (/^[1-9]$/.test(key) && labels.list[Number(key) - 1]) {
    pickLabel(labels.list[Number(key) - 1].name);
  } else {
    return;
  }
});

document.addEventListener("keyup", (event) => {
  if (event.key === " ") {
    state.space = false;
    stage.classList.remove("pan-ready");
  }
});

$("undo-button").addEventListener("click", undo);
$("redo-button").addEventListener("click", redo);
$("clear-button").addEventListener("click", clearPrompts);
$("zoom-in").addEventListener("click", () => view.zoomCentre(1.25));
$("zoom-out").addEventListener("click", () => view.zoomCentre(0.8));
$("zoom-fit").addEventListener("click", () => view.fit());
$("help-button").addEventListener("click", () => toggleHelp());
$("help").addEventListener("click", (event) => { if (event.target === $("help")) toggleHelp(false); });
$("prev-button").addEventListener("click", () => go(-1));
$("next-button").addEventListener("click", () => go(+1));

// --- images: open in place, neighbours, embedding prefetch ---------------------------------------------------

const statusWaiters = new Map(); // image id -> resolve callbacks, woken by image.status events

function waitForStatus(imageId) {
  return new Promise((resolve) => {
    statusWaiters.set(imageId, [...(statusWaiters.get(imageId) || []), resolve]);
    setTimeout(resolve, 5000); // in case a websocket event was missed
  });
}

const EMBEDDING_TEXT = { queued: "Embedding queued", embedding: "Computing embedding…", failed: "Embedding failed" };

// The ready embedding's bytes; `onStatus` hears about queued / computing on the way.
async function embeddingBytes(imageId, onStatus) {
  for (;;) {
    const detail = await api(`/api/v1/images/${imageId}/`);
    if (detail.status === "ready" && detail.embedding_url) {
      const response = await fetch(detail.embedding_url, { credentials: "same-origin" });
      if (!response.ok) throw new Error(`embedding download failed (HTTP ${response.status})`);
      return response.arrayBuffer();
    }
    if (detail.status === "failed") throw new Error(`the embedding failed: ${detail.error}`);
    onStatus(detail.status);
    await waitForStatus(imageId);
  }
}

// Loads the embedding into the worker (its LRU keeps the last few) unless it is there already.
async function ensureEmbedding(imageId, onStatus = () => {}) {
  if (await decoder.hasEmbedding(imageId)) return;
  const bytes = await embeddingBytes(imageId, onStatus);
  await decoderReady;
  await decoder.setEmbedding(imageId, bytes);
}

function neighbour(step) {
  const ids = state.images;
  const at = ids.indexOf(state.image.id);
  if (at < 0) return Number((step > 0 ? root.dataset.next : root.dataset.previous) || 0) || null;
  return ids[at + step] ?? null;
}

function go(step) {
  const id = neighbour(step);
  if (id) openImage(id).catch(report);
}

function showPosition() {
  const at = state.images.indexOf(state.image.id);
  $("image-position").textContent = at >= 0 ? `${at + 1} / ${state.images.length}` : "";
  $("prev-button").disabled = !neighbour(-1);
  $("next-button").disabled = !neighbour(+1);
  root.dataset.previous = neighbour(-1) || "";
  root.dataset.next = neighbour(+1) || "";
}

async function loadPicture(id) {
  const img = new Image();
  img.src = `/api/v1/images/${id}/file`;
  await img.decode();
  return img;
}

async function openImage(id, first = false) {
  const generation = ++state.generation;
  decoder.dropHover();
  Object.assign(state, { ready: false, hover: null, history: [EMPTY], index: 0, choice: 0, objects: [], selectedId: null, highlightId: null });
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
  layoutImage(detail.width, detail.height);
  imageCanvas.getContext("2d").clearRect(0, 0, detail.width, detail.height);
  draw();
  showPosition();
  setStatus("Loading image…", "loading");
  const picture = loadPicture(id).then((img) => {
    if (generation === state.generation) imageCanvas.getContext("2d").drawImage(img, 0, 0);
  });
  const masks = loadMasks();
  chip("embedding-status", "Embedding…", "loading");
  await ensureEmbedding(id, (status) => {
    if (generation !== state.generation) return;
    chip("embedding-status", EMBEDDING_TEXT[status] || status, "loading");
    setStatus(EMBEDDING_TEXT[status] || status, "loading");
  });
  await Promise.all([picture, masks, decoderReady]);
  if (generation !== state.generation) return;
  chip("embedding-status", "Embedding ready", "ready");
  state.ready = true;
  root.dataset.ready = "1";
  setStatus("Ready — hover over an object", "ready");
  prefetch(neighbour(+1));
}

// The next image's embedding and picture, fetched once the current one is usable (HTTP-cached and in
// the worker's LRU), so moving on is instant.
function prefetch(id) {
  if (!id) return;
  const generation = state.generation;
  setTimeout(() => {
    if (generation !== state.generation) return;
    ensureEmbedding(id).then(() => { root.dataset.prefetched = String(id); }).catch(() => {});
    loadPicture(id).catch(() => {});
  }, 300);
}

connectProject(projectId, {
  onEvent: (event) => {
    if (event.type === "image.status") {
      (statusWaiters.get(event.image) || []).forEach((resolve) => resolve());
      statusWaiters.delete(event.image);
      if (!state.images.includes(event.image) && event.status !== "deleted") refreshImageList();
    }
    if (state.image && event.image === state.image.id && (event.type === "mask.saved" || event.type === "mask.deleted")) loadMasks().catch(report);
  },
  onState: (s) => {
    root.dataset.live = s;
    chip("connection-status", s === "live" ? "Live" : "Connection lost — reconnecting…", s === "live" ? "ready" : "error");
  },
  onReconnect: () => state.image && loadMasks().catch(report),
});

async function refreshImageList() {
  const images = await api(`/api/v1/projects/${projectId}/images/`);
  state.images = images.map((i) => i.id);
  if (state.image) showPosition();
}

// --- start-up: decoder, labels, image list and the first image in parallel ------------------------------------

const pageOpened = performance.now();
const graphUrl = (graph) => `/api/v1/models/${modelKey}/decoder.onnx?graph=${graph}`;
const decoderReady = decoder
  .init({
    graphs: { prepare: graphUrl("prepare"), prompt: graphUrl("prompt") },
    model: modelKey,
    ortBase: `${staticBase}vendor/ort/`,
    threads: Number(new URLSearchParams(location.search).get("threads")) || undefined, // for benchmarks
  })
  .then((info) => {
    stats.decoderLoadMs = info.ms;
    chip("decoder-status", `Decoder ready · ${info.threads} thread${info.threads > 1 ? "s" : ""}`, "ready");
    return info;
  })
  .catch((error) => {
    chip("decoder-status", "Decoder failed", "error");
    throw error;
  });

async function start() {
  const id = Number(root.dataset.imageId);
  state.image = { id, width: Number(root.dataset.width), height: Number(root.dataset.height) };
  await Promise.all([
    labels.load().then(() => { renderLabels(); renderObjectList(); }),
    refreshImageList(),
    openImage(id, true),
  ]);
  stats.readyMs = performance.now() - pageOpened;
}

start().catch((error) => {
  setStatus("Error", "error");
  report(error);
});
