// The annotator's keyboard: the shortcuts listed in the help dialog (which this module opens and
// closes) and Space held as the pan modifier. Keys typed into the label field stay there, except Enter
// (save) and Escape (leave the field, clear the prompts).

// actions: {save(), clear(), undo(), redo(), cycleCandidate(step), zoom(factor), fit(), go(step),
// toggleSelected(), removeSelected(), pickLabel(number), panKey(held)}
export function bindShortcuts(help, helpButton, actions) {
  const toggleHelp = (show = help.hidden) => { help.hidden = !show; };
  helpButton.addEventListener("click", () => toggleHelp());
  help.addEventListener("click", (event) => { if (event.target === help) toggleHelp(false); });

  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement;
    if (event.key === " " && !typing) {
      actions.panKey(true);
      event.preventDefault();
      return;
    }
    if (typing && event.key !== "Enter" && event.key !== "Escape") return;
    const ctrl = event.ctrlKey || event.metaKey;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (!help.hidden && (key === "Escape" || key === "?")) {
      toggleHelp(false);
    } else if (key === "Enter") {
      event.preventDefault();
      actions.save();
    } else if (key === "Escape") {
      if (typing) event.target.blur();
      actions.clear();
    } else if (ctrl && ((key === "z" && event.shiftKey) || key === "y")) {
      event.preventDefault();
      actions.redo();
    } else if (ctrl && key === "z") {
      event.preventDefault();
      actions.undo();
    } else if (ctrl) {
      return;
    } else if (key === "Tab") {
      event.preventDefault();
      actions.cycleCandidate(event.shiftKey ? -1 : 1);
    } else if (key === "?") {
      toggleHelp();
    } else if (key === "+" || key === "=") {
      actions.zoom(1.25);
    } else if (key === "-") {
      actions.zoom(0.8);
    } else if (key === "0") {
      actions.fit();
    } else if (key === "ArrowRight" || key === "PageDown") {
      actions.go(+1);
    } else if (key === "ArrowLeft" || key === "PageUp") {
      actions.go(-1);
    } else if (key === "h") {
      actions.toggleSelected();
    } else if (key === "Delete" || key === "Backspace") {
      actions.removeSelected();
    } else if (/^[1-9]$/.test(key)) {
      actions.pickLabel(Number(key));
    }
  });

  document.addEventListener("keyup", (event) => {
    if (event.key === " ") actions.panKey(false);
  });
}
