// The project page: image grid with live status, parallel uploads with progress, members.
import { api, uploadFile } from "./api.js";
import { connectProject } from "./live.js";

const root = document.getElementById("project");
const projectId = Number(root.dataset.projectId);
const grid = document.getElementById("image-grid");
const emptyGrid = document.getElementById("empty-grid");
const liveStatus = document.getElementById("live-status");
const PARALLEL_UPLOADS = 4;

const tiles = new Map(); // image id -> <li>

function renderTile(image) {
  let tile = tiles.get(image.id);
  if (!tile) {
    tile = document.createElement("li");
    tile.className = "tile";
    tile.dataset.imageId = image.id;
    tile.innerHTML = `<a><img loading="lazy" alt=""><span class="name"></span><span class="badge"></span></a>`;
    tile.querySelector("a").href = `/images/${image.id}/`;
    tile.querySelector("img").src = image.thumbnail_url;
    tile.querySelector(".name").textContent = image.name;
    tiles.set(image.id, tile);
    grid.append(tile);
  }
  setStatus(image.id, image.status, image.error);
  emptyGrid.hidden = tiles.size > 0;
}

function setStatus(imageId, status, error) {
  const tile = tiles.get(imageId);
  if (!tile) return;
  if (status === "deleted") {
    tile.remove();
    tiles.delete(imageId);
    return;
  }
  tile.dataset.status = status;
  const badge = tile.querySelector(".badge");
  badge.textContent = status;
  badge.title = error || "";
}

async function refresh() {
  const images = await api(`/api/v1/projects/${projectId}/images/`);
  images.forEach(renderTile);
  emptyGrid.hidden = tiles.size > 0;
}

connectProject(projectId, {
  onEvent: (event) => {
    if (event.type === "image.status") {
      if (tiles.has(event.image)) setStatus(event.image, event.status, event.error);
      else refresh();
    }
  },
  onState: (state) => {
    liveStatus.dataset.state = state;
    liveStatus.textContent = state === "live" ? "live" : "connection lost — reconnecting…";
  },
  onReconnect: refresh,
});
refresh();

// --- uploads ---------------------------------------------------------------------------------------

const dropzone = document.getElementById("dropzone");
if (dropzone) {
  const input = document.getElementById("file-input");
  const list = document.getElementById("upload-list");
  const summary = document.getElementById("upload-summary");
  const totalBar = document.getElementById("upload-total");
  const count = document.getElementById("upload-count");
  const fractions = new Map(); // row -> fraction uploaded, for the overall bar
  let total = 0;
  let done = 0;
  let failed = 0;
  const queue = [];
  let running = 0;

  const updateSummary = () => {
    summary.hidden = false;
    count.textContent = `${done} of ${total} uploaded` + (failed ? `, ${failed} failed` : "");
    let sum = 0;
    for (const fraction of fractions.values()) sum += fraction;
    totalBar.value = total ? sum / total : 0;
  };

  const pump = () => {
    while (running < PARALLEL_UPLOADS && queue.length) {
      const { file, row } = queue.shift();
      running += 1;
      const bar = row.querySelector("progress");
      uploadFile(projectId, file, (fraction) => {
        bar.value = fraction;
        fractions.set(row, fraction);
        updateSummary();
      })
        .then((image) => {
          row.dataset.state = "done";
          row.querySelector(".msg").textContent = "uploaded";
          bar.value = 1;
          fractions.set(row, 1);
          done += 1;
          renderTile(image);
        })
        .catch((error) => {
          row.dataset.state = "failed";
          row.querySelector(".msg").textContent = error.message;
          fractions.set(row, 1); // finished, if not well
          failed += 1;
        })
        .finally(() => {
          running -= 1;
          updateSummary();
          pump();
        });
    }
  };

  const addFiles = (files) => {
    for (const file of files) {
      const row = document.createElement("li");
      row.innerHTML = `<span class="fname"></span><progress max="1" value="0"></progress><span class="msg"></span>`;
      row.querySelector(".fname").textContent = file.name;
      list.prepend(row);
      queue.push({ file, row });
      total += 1;
    }
    updateSummary();
    pump();
  };

  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  dropzone.addEventListener("dragover", (event) => { event.preventDefault(); dropzone.classList.add("over"); });
  dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropzone.classList.remove("over");
    addFiles(event.dataTransfer.files);
  });
}

// --- members ---------------------------------------------------------------------------------------

async function loadMembers() {
  const members = await api(`/api/v1/projects/${projectId}/members/`);
  const list = document.getElementById("member-list");
  list.replaceChildren(...members.map((member) => {
    const item = document.createElement("li");
    item.textContent = `${member.username} — ${member.role}`;
    return item;
  }));
}
loadMembers();

const memberForm = document.getElementById("add-member");
if (memberForm) {
  memberForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("member-error");
    try {
      await api(`/api/v1/projects/${projectId}/members/`, {
        method: "POST",
        json: { username: memberForm.username.value, role: memberForm.role.value },
      });
      error.hidden = true;
      memberForm.reset();
      loadMembers();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  });
}
