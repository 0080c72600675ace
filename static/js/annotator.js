// The annotator page: wires the decoder worker, the prompt chain, the view and the objects list to the
// DOM. Hover previews a mask, clicks add points, a drag draws a box, Enter saves the object with the
// current label; images switch in place (navigation.js) so the decoder and cached embeddings stay warm.
import { api } from "./api.js";
import { EMPTY, choose, decodeChain, shown } from "./chain.js";
import { inputSize } from "./coords.js";
import { Decoder } from "./decoder.js";
import { EmbeddingLoader } from "./embedding-loader.js";
import { Labels } from "./labels.js";
import { connectProject } from "./live.js";
import { Navigation } from "./navigation.js";
import { renderObjects } from "./objects.js";
import { hexToRgb, paintLowRes, paintObjects, renderPrompts } from "./overlay.js";
import { PointerInput } from "./pointer.js";
import { PromptHistory } from "./prompt-history.js";
import { decodeMask, encodeMask } from "./rle.js";
import { bindShortcuts } from "./shortcuts.js";
import { chip, report, setStatus, showError } from "./status.js";
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

const LIVE_COLOUR = [56, 189, 248];

const state = {
  image: null, // {id, width, height, name}
  generation: 0, // bumps on every image switch; late answers for an older image are dropped
  ready: false,
  hover: null, // {point, candidates} before the first prompt
  objects: [], // saved masks [{id, label, area, mask, visible, points, box}]
  hidden: new Set(),
  selectedId: null,
  highlightId: null,
};
const prompts = new PromptHistory();
const labels = new Labels(projectId);
// For tests and benchmarks/browser.py: timings of hover paints and decodes, milliseconds.
// hoverSteps: per painted hover, where its time went: waiting for the decoder (event to request sent),
// the decode in the worker, the round trip's messaging, and painting.
const stats = (window.annotatorStats = { hoverToPaint: [], decodeMs: [], hoverDecodeMs: [], hoverSteps: [], firstMaskAt: null });

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
  return shown(prompts.current) ?? (state.hover ? state.hover.candidates[0] : null);
}

function drawLive() {
  const live = liveCandidate();
  liveCanvas.hidden = !live;
  if (!live) return;
  const prompted = prompts.current.candidates.length > 0;
  paintLowRes(liveCanvas.getContext("2d"), live.lowRes, prompted ? hexToRgb(labelColour()) : LIVE_COLOUR, prompted ? 0.55 : 0.4);
}

function drawPrompts() {
  const s = prompts.current;
  renderPrompts(promptLayer, { points: s.points, box: s.box, dragBox: pointer.dragBox }, view.zoom);
}

function labelColour() {
  const label = labels.find(labelInput ? labelInput.value : "");
  return label ? label.color : "#38bdf8";
}

function updatePanel() {
  const s = prompts.current;
  const live = liveCandidate();
  if (saveButton) saveButton.disabled = !s.candidates.length;
  $("undo-button").disabled = !prompts.canUndo;
  $("redo-button").disabled = !prompts.canRedo;
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
      b.className = i === s.choice ? "candidate active" : "candidate";
      b.textContent = `${i + 1} · ${c.score.toFixed(2)}`;
      b.title = "Candidate masks for one click, best first (Tab cycles); a further click refines the one chosen";
      b.addEventListener("click", () => chooseCandidate(() => i));
      return b;
    }),
  );
  root.dataset.points = String(s.points.length);
  root.dataset.candidates = String(s.candidates.length);
  root.dataset.choice = String(s.choice);
  root.dataset.historyIndex = String(prompts.index);
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

// change(previousState) -> {points, box}: the new prompts, decoded with the chain rule.
function changePrompts(change) {
  decoder.dropHover();
  const hover = state.hover;
  state.hover = null;
  const generation = state.generation;
  return enqueue(async () => {
    const previous = prompts.current;
    const { points, box } = change(previous);
    // The hover preview at the very spot of a first click already is that click's first step.
    const reuse = hover && !box && points.length >= 1 && hover.point[0] === points[0][0] && hover.point[1] === points[0][1] && points[0][2] === 1;
    const next = await decodeChain(decode, previous, points, box, reuse ? hover.candidates : null);
    if (generation !== state.generation) return;
    prompts.push(next);
    draw();
    stats.firstMaskAt ??= performance.now();
    root.dataset.decodes = String(Number(root.dataset.decodes || 0) + 1);
  });
}

const addPoint = (point) => changePrompts((s) => ({ points: [...s.points, point], box: s.box }));
const setBox = (box) => changePrompts((s) => ({ points: s.points, box }));

// Undo, redo, clear and a candidate choice queue behind pending clicks, so each applies to the state
// the clicks before it made.
function undo() {
  enqueue(() => { prompts.undo(); draw(); });
}

function redo() {
  enqueue(() => { prompts.redo(); draw(); });
}

function clearPrompts() {
  enqueue(() => {
    const s = prompts.current;
    if (!s.points.length && !s.box) return;
    prompts.push(EMPTY);
    draw();
  });
}

// which(state) -> the candidate index to show, save and refine.
function chooseCandidate(which) {
  enqueue(() => {
    const next = choose(prompts.current, which(prompts.current));
    if (!next) return;
    prompts.replace(next);
    draw();
  });
}

async function hoverAt(point, eventTime) {
  const s = prompts.current;
  if (!state.ready || s.points.length || s.box || pointer.drag || pointer.pan) return;
  const generation = state.generation;
  try {
    const result = await decoder.hover(request({ points: [[point[0], point[1], 1]], box: null, maskInput: null, multimask: true }), eventTime);
    if (!result || generation !== state.generation || prompts.current.points.length || prompts.current.box || pointer.drag) return; // stale
    state.hover = { point, candidates: result.candidates };
    stats.hoverDecodeMs.push(result.ms);
    drawLive();
    updatePanel();
    pointer.refreshCursor();
    const painted = performance.now();
    stats.hoverToPaint.push(painted - eventTime);
    const { sentAt, returnedAt, ms } = result;
    stats.hoverSteps.push({ wait: sentAt - eventTime, decode: ms, trip: returnedAt - sentAt - ms, paint: painted - returnedAt });
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

const pointer = new PointerInput(stage, view, $("cursor-pos"), {
  enabled: () => state.ready,
  press: () => maskCanvas.focus({ preventScroll: true }),
  hover: hoverAt,
  unhover: dropHover,
  point: addPoint,
  box: setBox,
  boxChanged: drawPrompts,
  deferCursor: () => decoder.hoverPending,
});
decoder.onIdle = () => pointer.refreshCursor();

// --- saving, the label set and the objects list -------------------------------------------------------------

async function commit() {
  if (!canEdit) return;
  await queue; // the clicks made so far come first
  const s = prompts.current;
  if (!s.candidates.length || !state.image) return;
  const label = (labelInput.value || "").trim();
  if (!label) {
    showError("Give the object a label first.");
    labelInput.focus();
    return;
  }
  const image = state.image;
  const chosen = shown(s);
  saveButton.disabled = true;
  try {
    // Full resolution only now, for the object being kept.
    const { mask } = await decoder.upscale(chosen.lowRes, image.height, image.width);
    await labels.ensure(label);
    await api(`/api/v1/images/${image.id}/masks/`, {
      method: "POST",
      json: { label, rle: encodeMask(mask, image.height, image.width), points: s.points, box: s.box, candidate: s.choice, score: chosen.score },
    });
    showError("");
    // Back to the image, so the shortcuts work again after typing a label.
    if (document.activeElement === labelInput) maskCanvas.focus({ preventScroll: true });
    prompts.reset();
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

// --- keyboard and toolbar -----------------------------------------------------------------------------------

bindShortcuts($("help"), $("help-button"), {
  save: commit,
  clear: clearPrompts,
  undo,
  redo,
  cycleCandidate: (step) => chooseCandidate((s) => s.choice + step),
  zoom: (factor) => view.zoomCentre(factor),
  fit: () => view.fit(),
  go: (step) => navigation.go(step),
  toggleSelected: () => state.selectedId && toggleObject(state.selectedId),
  removeSelected: () => state.selectedId && canEdit && removeObject(state.selectedId),
  pickLabel: (number) => labels.list[number - 1] && pickLabel(labels.list[number - 1].name),
  panKey: (held) => pointer.setSpace(held),
});

$("undo-button").addEventListener("click", undo);
$("redo-button").addEventListener("click", redo);
$("clear-button").addEventListener("click", clearPrompts);
$("zoom-in").addEventListener("click", () => view.zoomCentre(1.25));
$("zoom-out").addEventListener("click", () => view.zoomCentre(0.8));
$("zoom-fit").addEventListener("click", () => view.fit());

// --- start-up: decoder, labels, image list and the first image in parallel ------------------------------------

const pageOpened = performance.now();
// The version in the URL keeps a browser from pairing cached graphs of two versions (prepare feeds prompt).
const graphUrl = (graph) => `/api/v1/models/${modelKey}/decoder.onnx?graph=${graph}&v=${root.dataset.graphsVersion}`;
const query = new URLSearchParams(location.search);
const decoderReady = decoder
  .init({
    graphs: { prepare: graphUrl("prepare"), prompt: graphUrl("prompt") },
    model: modelKey,
    ortBase: `${staticBase}vendor/ort/`,
    // Overrides for benchmarks and tests: ?threads=N, ?backend=wasm|webgpu.
    threads: Number(query.get("threads")) || undefined,
    backend: query.get("backend") || undefined,
  })
  .then((info) => {
    stats.decoderLoadMs = info.ms;
    stats.decoderBackend = info.backend;
    const how = info.backend === "webgpu" ? "WebGPU" : `${info.threads} thread${info.threads > 1 ? "s" : ""}`;
    chip("decoder-status", `Decoder ready · ${how}`, "ready");
    return info;
  })
  .catch((error) => {
    chip("decoder-status", "Decoder failed", "error");
    throw error;
  });

const embeddings = new EmbeddingLoader(decoder, decoderReady);
const navigation = new Navigation(projectId, state, {
  root,
  canvas: imageCanvas,
  embeddings,
  decoderReady,
  reset: () => {
    decoder.dropHover();
    Object.assign(state, { hover: null, objects: [], selectedId: null, highlightId: null });
    prompts.reset();
  },
  layout: (width, height) => {
    layoutImage(width, height);
    draw();
  },
  loadMasks,
});

connectProject(projectId, {
  onEvent: (event) => {
    if (event.type === "image.status") {
      embeddings.statusChanged(event.image);
      if (!navigation.images.includes(event.image) && event.status !== "deleted") navigation.refresh();
    }
    if (state.image && event.image === state.image.id && (event.type === "mask.saved" || event.type === "mask.deleted")) loadMasks().catch(report);
  },
  onState: (s) => {
    root.dataset.live = s;
    chip("connection-status", s === "live" ? "Live" : "Connection lost — reconnecting…", s === "live" ? "ready" : "error");
  },
  onReconnect: () => state.image && loadMasks().catch(report),
});

async function start() {
  const id = Number(root.dataset.imageId);
  state.image = { id, width: Number(root.dataset.width), height: Number(root.dataset.height) };
  await Promise.all([
    labels.load().then(() => { renderLabels(); renderObjectList(); }),
    navigation.refresh(),
    navigation.open(id, true),
  ]);
  stats.readyMs = performance.now() - pageOpened;
}

start().catch((error) => {
  setStatus("Error", "error");
  report(error);
});
