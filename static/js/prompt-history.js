// The prompt states of the object being made (see chain.js), for undo and redo. Esc pushes the empty
// state, so clearing is undone like any prompt.
import { EMPTY } from "./chain.js";

export class PromptHistory {
  constructor() {
    this.reset();
  }

  reset() {
    this.states = [EMPTY];
    this.index = 0;
  }

  get current() {
    return this.states[this.index];
  }

  get canUndo() {
    return this.index > 0;
  }

  get canRedo() {
    return this.index < this.states.length - 1;
  }

  push(state) {
    this.states = [...this.states.slice(0, this.index + 1), state];
    this.index = this.states.length - 1;
  }

  // Another candidate chosen for the current state: no undo step of its own (undoing a later point
  // comes back to the choice), but the redo states were decoded from the old choice, so they go.
  replace(state) {
    this.states = [...this.states.slice(0, this.index), state];
  }

  undo() {
    if (this.canUndo) this.index--;
  }

  redo() {
    if (this.canRedo) this.index++;
  }
}
