// The annotator's status: the chips in the status bar, the message over the stage and the error line.
const $ = (id) => document.getElementById(id);

export function chip(id, text, kind) {
  const el = $(id);
  el.textContent = text;
  el.dataset.state = kind;
}

export function setStatus(text, kind) {
  chip("status", text, kind);
  $("stage-message").textContent = text;
  $("stage-message").hidden = kind === "ready";
}

export function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

export const report = (error) => showError(error.message || String(error));
