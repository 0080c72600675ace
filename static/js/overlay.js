// Drawing over the image. Saved objects are painted pixel for pixel on a canvas at the image's own
// resolution (shown with nearest-neighbour scaling, so a mask pixel is an image pixel at any zoom).
// The live object is painted at the decoder's 256x256 resolution and the browser scales that canvas
// up (bilinear, on the compositor): no per-pixel work at image size while hovering.

export function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

// objects: [{mask: Uint8Array(h*w), colour: [r, g, b], emphasis: 0 | 1}] painted in one pass; an
// emphasised object is more opaque and outlined.
export function paintObjects(ctx, objects, width, height) {
  const image = ctx.createImageData(width, height);
  const px = image.data;
  for (const { mask, colour, emphasis } of objects) {
    const a = emphasis ? 170 : 100;
    for (let i = 0, j = 0; i < mask.length; i++, j += 4) {
      if (!mask[i]) continue;
      const edge = emphasis && (i % width === 0 || !mask[i - 1] || !mask[i + 1] || !mask[i - width] || !mask[i + width]);
      px[j] = edge ? 255 : colour[0];
      px[j + 1] = edge ? 255 : colour[1];
      px[j + 2] = edge ? 255 : colour[2];
      px[j + 3] = edge ? 255 : a;
    }
  }
  ctx.putImageData(image, 0, 0);
}

// Low-res logits -> a 256x256 RGBA tile. Alpha ramps linearly through logit 0, so after the browser's
// bilinear upscale the visible edge sits where the interpolated logits cross 0 (the mask boundary).
export function paintLowRes(ctx, lowRes, colour, opacity) {
  const side = 256;
  const image = ctx.createImageData(side, side);
  const px = image.data;
  const full = Math.round(opacity * 255);
  for (let i = 0, j = 0; i < lowRes.length; i++, j += 4) {
    const t = Math.min(Math.max(0.5 + lowRes[i] * 1.5, 0), 1);
    if (t === 0) continue;
    px[j] = colour[0];
    px[j + 1] = colour[1];
    px[j + 2] = colour[2];
    px[j + 3] = full * t;
  }
  ctx.putImageData(image, 0, 0);
}

const SVG = "http://www.w3.org/2000/svg";

// Points (green positive, red negative) and the box as SVG in image coordinates; sizes are divided by
// the zoom so they stay the same on screen.
export function renderPrompts(svg, { points, box, dragBox }, zoom) {
  const nodes = [];
  for (const b of [box, dragBox]) {
    if (!b) continue;
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("x", b[0]);
    rect.setAttribute("y", b[1]);
    rect.setAttribute("width", b[2] - b[0]);
    rect.setAttribute("height", b[3] - b[1]);
    rect.setAttribute("class", b === dragBox ? "prompt-box dragging" : "prompt-box");
    rect.setAttribute("stroke-width", 2 / zoom);
    nodes.push(rect);
  }
  for (const [x, y, label] of points) {
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("cx", x);
    dot.setAttribute("cy", y);
    dot.setAttribute("r", 6 / zoom);
    dot.setAttribute("stroke-width", 2 / zoom);
    dot.setAttribute("class", label ? "prompt-point positive" : "prompt-point negative");
    nodes.push(dot);
  }
  svg.replaceChildren(...nodes);
}
