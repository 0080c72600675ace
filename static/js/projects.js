import { api } from "./api.js";

const form = document.getElementById("new-project");
const error = document.getElementById("new-project-error");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const project = await api("/api/v1/projects/", { method: "POST", json: { name: form.name.value } });
    location.href = `/projects/${project.id}/`;
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
});
