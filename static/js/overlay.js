// Drawing masks and prompts over the image. Canvases are at the image's own resolution and scaled by
// CSS, so a mask pixel is an image pixel at any display size.

const PALETTE = [[37, 99, 235], [220, 38, 38], [22, 163, 74], [217, 119, 6], [147, 51, 234], [8, 145, 178], [219, 39, 119], [101, 163, 13]];

export function colourFor(index) {
  return PALETTE[index % PALETTE.length];
}

// masks: [{mask: Uint8Array(h*w), colour: [r, g, b], alpha}] painted onto ctx in one pass.
export function paintMasks(ctx, masks, width, height) {
  const image = ctx.createImageData(width, height);
  const px = image.data;
  for (const { mask, colour, alpha } of masks) {
    const a = Math.round(alpha * 255);
    for (let i = 0, j = 0; i < mask.length; i++, j += 4) {
      if (mask[i]) {
        px[j] = colour[0];
        px[j + 1] = colour[1];
        px[j + 2] = colour[2];
        px[j + 3] = a;
      }
    }
  }
  ctx.putImageData(image, 0, 0);
}

export function paintOutline(ctx, mask, width, height, colour) {
  const image = ctx.getImageData(0, 0, width, height);
  const px = image.data;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (!mask[i]) continue;
      const edge = x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
        !mask[i - 1] || !mask[i + 1] || !mask[i - width] || !mask[i + width];
      if (edge) {
        const j = 4 * i;
        px[j] = colour[0]; px[j + 1] = colour[1]; px[j + 2] = colour[2]; px[j + 3] = 255;
      }
    }
  }
  ctx.putImageData(image, 0, 0);
}

// Points: green = positive, red = negative; radius in screen pixels whatever the zoom.
export function paintPrompts(ctx, points, box, pixelsPerScreenPixel) {
  const r = 5 * pixelsPerScreenPixel;
  ctx.lineWidth = 2 * pixelsPerScreenPixel;
  if (box) {
    ctx.strokeStyle = "#facc15";
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
  for (const [x, y, label] of points) {
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = label ? "#22c55e" : "#ef4444";
    ctx.fill();
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
}
