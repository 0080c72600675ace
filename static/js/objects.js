// The objects list: one row per saved mask with show/hide, select, relabel and delete. Hovering a row
// highlights its mask on the image (the page repaints; this module only reports what happened).

function button(className, text, title) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.title = title;
  return b;
}

// objects: [{id, label, area, visible}]; on: {hover(id|null), select(id), toggle(id), relabel(id, name), remove(id)}
export function renderObjects(list, objects, { labels, canEdit, selectedId, on }) {
  const rows = objects.map((object, index) => {
    const row = document.createElement("li");
    row.dataset.maskId = object.id;
    row.className = "object";
    row.classList.toggle("selected", object.id === selectedId);
    row.classList.toggle("is-hidden", !object.visible);
    const eye = button("eye", object.visible ? "◉" : "○", "Show / hide (H)");
    eye.setAttribute("aria-pressed", String(object.visible));
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    const [r, g, b] = labels.colour(object.label);
    swatch.style.background = `rgb(${r},${g},${b})`;
    const number = document.createElement("span");
    number.className = "index";
    number.textContent = String(index + 1);
    let name;
    if (canEdit) {
      name = document.createElement("select");
      name.className = "label relabel";
      name.title = "Relabel";
      const names = new Set([object.label, ...labels.list.map((l) => l.name)]);
      for (const n of names) name.add(new Option(n, n, false, n === object.label));
      name.addEventListener("change", () => on.relabel(object.id, name.value));
      name.addEventListener("click", (event) => event.stopPropagation());
    } else {
      name = document.createElement("span");
      name.className = "label";
      name.textContent = object.label;
    }
    const area = document.createElement("span");
    area.className = "area";
    area.textContent = object.area.toLocaleString();
    area.title = "Area in pixels";
    const png = document.createElement("a");
    png.className = "png";
    png.textContent = "PNG";
    png.title = "Download the mask as PNG";
    png.href = `/api/v1/masks/${object.id}/png`;
    png.download = "";
    row.append(eye, swatch, number, name, area, png);
    if (canEdit) {
      const remove = button("delete", "✕", "Delete (Del)");
      remove.addEventListener("click", (event) => { event.stopPropagation(); on.remove(object.id); });
      row.append(remove);
    }
    eye.addEventListener("click", (event) => { event.stopPropagation(); on.toggle(object.id); });
    row.addEventListener("click", () => on.select(object.id));
    row.addEventListener("mouseenter", () => on.hover(object.id));
    row.addEventListener("mouseleave", () => on.hover(null));
    return row;
  });
  list.replaceChildren(...rows);
}
