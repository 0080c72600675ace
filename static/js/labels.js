// The project's label set ({id, name, color}), with labels created on the fly.
import { api } from "./api.js";
import { hexToRgb } from "./overlay.js";

export class Labels {
  constructor(projectId) {
    this.projectId = projectId;
    this.list = [];
  }

  async load() {
    this.list = await api(`/api/v1/projects/${this.projectId}/labels/`);
    return this.list;
  }

  find(name) {
    return this.list.find((l) => l.name === name.trim());
  }

  colour(name) {
    const label = this.find(name);
    return label ? hexToRgb(label.color) : [148, 163, 184];
  }

  // The label of that name, created (the server picks its colour) if the project has none yet.
  async ensure(name) {
    const existing = this.find(name);
    if (existing) return existing;
    const label = await api(`/api/v1/projects/${this.projectId}/labels/`, { method: "POST", json: { name: name.trim() } });
    this.list = [...this.list.filter((l) => l.id !== label.id), label];
    return label;
  }
}
