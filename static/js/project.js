// The project page: image grid with live status, parallel uploads with progress, members.
import { api, uploadFile } from "./api.js";
import { connectProject } from "./live.js";

const root = document.getElementById("project");
const projectId = Number(root.dataset.projectId);
const grid = document.getElementById("image-grid");
const emptyGrid = document.getElementById("empty-grid");
const liveStatus = document.getElementById("live-status");
const imageSummary = document.getElementById("image-summary");
const readyBar = document.getElementById("ready-total");
const readyCount = document.getElementById("ready-count");
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
    // In id order, as the API lists them and the jobs run, whatever order parallel uploads finish in.
    let previous = grid.lastElementChild;
    while (previous && Number(previous.dataset.imageId) > image.id) previous = previous.previousElementSibling;
    if (previous) previous.after(tile);
    else grid.prepend(tile);
  }
  setStatus(image.id, image.status, image.error);
}

function setStatus(imageId, status, error) {
  const tile = tiles.get(imageId);
  if (!tile) return;
  if (status === "deleted") {
    tile.remove();
    tiles.delete(imageId);
  } else {
    tile.dataset.status = status;
    const badge = tile.querySelector(".badge");
    badge.textContent = status;
    badge.title = error || "";
  }
  scheduleSummary();
}

// How many of the project's images are ready, so a bulk upload can be watched without scrolling
// through the grid. Coalesced: a refresh renders every tile at once.
let summaryPending = false;
function scheduleSummary() {
  if (summaryPending) return;
  summaryPending = true;
  queueMicrotask(() => {
    summaryPending = false;
    const counts = { queued: 0, embedding: 0, ready: 0, failed: 0 };
    for (const tile of tiles.values()) counts[tile.dataset.status] = (counts[tile.dataset.status] || 0) + 1;
    const total = tiles.size;
    emptyGrid.hidden = total > 0;
    imageSummary.hidden = total === 0;
    readyBar.value = total ? counts.ready / total : 0;
    const parts = [total === 1 ? `${counts.ready} of 1 image ready` : `${counts.ready} of ${total} images ready`];
    for (const status of ["embedding", "queued", "failed"]) if (counts[status]) parts.push(`${counts[status]} ${status}`);
    readyCount.textContent = parts.join(" · ");
  });
}

// The whole list again (after a reconnect: websocket events are at-most-once), so images deleted in the
// meantime lose their tiles too.
async function refresh() {
  const images = await api(`/api/v1/projects/${projectId}/images/`);
  const listed = new Set(images.map((image) => image.id));
  for (const id of [...tiles.keys()]) if (!listed.has(id)) setStatus(id, "deleted");
  images.forEach(renderTile);
  scheduleSummary();
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

  // Keep the row that just started in view inside the list (not the page): the list holds every
  // file of a drop, and the rows in flight are the ones worth watching.
  const follow = (row) => {
    const below = row.getBoundingClientRect().bottom - list.getBoundingClientRect().bottom;
    if (below > 0) list.scrollTop += below;
  };

  const pump = () => {
    while (running < PARALLEL_UPLOADS && queue.length) {
      const { file, row } = queue.shift();
      running += 1;
      const bar = row.querySelector("progress");
      row.dataset.state = "uploading";
      row.querySelector(".msg").textContent = "uploading…";
      follow(row);
      uploadFile(projectId, file, (fraction) => {
        bar.value = fraction;
        // Every byte sent: the server is checking and storing the image now.
        if (fraction >= 1) row.querySelector(".msg").textContent = "processing…";
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
      row.dataset.state = "waiting";
      row.querySelector(".msg").textContent = "waiting";
      list.append(row); // in the order the files were dropped, uploaded in that order
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
