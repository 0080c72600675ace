// Low-res logits -> the full-resolution mask, exactly as SamPredictor.postprocess_masks does it:
// bilinear (half-pixel centres, align_corners=False) from 256x256 to the padded 1024x1024 square, crop
// to the resized image, bilinear to the original (H, W), threshold at 0. Both resizes are separable
// linear maps, so each output row/column reads at most 4 low-res rows/columns with fixed weights:
// one pass along x, one along y, instead of materialising the 1024x1024 intermediate.
import { MODEL_SIZE, inputSize } from "./coords.js";

export const LOW_RES = 256;

// PyTorch's source index for one linear resize: clamped at 0 below, neighbour clamped at the end.
function source(dst, scale, length) {
  const s = Math.max((dst + 0.5) * scale - 0.5, 0);
  const i0 = Math.floor(s);
  return [i0, i0 < length - 1 ? i0 + 1 : i0, s - i0];
}

// For each of `outLength` outputs: 4 (low-res index, weight) taps of the two composed resizes.
function axisTaps(outLength, cropLength) {
  const index = new Int32Array(outLength * 4);
  const weight = new Float64Array(outLength * 4);
  for (let o = 0; o < outLength; o++) {
    const [x0, x1, f] = source(o, cropLength / outLength, cropLength);
    const [a0, a1, g] = source(x0, LOW_RES / MODEL_SIZE, LOW_RES);
    const [b0, b1, h] = source(x1, LOW_RES / MODEL_SIZE, LOW_RES);
    index.set([a0, a1, b0, b1], 4 * o);
    weight.set([(1 - f) * (1 - g), (1 - f) * g, f * (1 - h), f * h], 4 * o);
  }
  return { index, weight };
}

// lowRes: Float32Array(256 * 256) logits -> Uint8Array(height * width), 1 inside.
export function upscaleMask(lowRes, height, width) {
  const [cropH, cropW] = inputSize(height, width);
  const xs = axisTaps(width, cropW);
  const ys = axisTaps(height, cropH);
  const rows = new Float64Array(LOW_RES * width); // low-res rows resampled along x
  const needed = new Uint8Array(LOW_RES);
  for (const r of ys.index) needed[r] = 1;
  for (let r = 0; r < LOW_RES; r++) {
    if (!needed[r]) continue;
    const src = r * LOW_RES;
    const dst = r * width;
    for (let x = 0, k = 0; x < width; x++, k += 4) {
      rows[dst + x] =
        xs.weight[k] * lowRes[src + xs.index[k]] + xs.weight[k + 1] * lowRes[src + xs.index[k + 1]] +
        xs.weight[k + 2] * lowRes[src + xs.index[k + 2]] + xs.weight[k + 3] * lowRes[src + xs.index[k + 3]];
    }
  }
  const mask = new Uint8Array(height * width);
  for (let y = 0, k = 0; y < height; y++, k += 4) {
    const r0 = ys.index[k] * width, r1 = ys.index[k + 1] * width, r2 = ys.index[k + 2] * width, r3 = ys.index[k + 3] * width;
    const w0 = ys.weight[k], w1 = ys.weight[k + 1], w2 = ys.weight[k + 2], w3 = ys.weight[k + 3];
    for (let x = 0, i = y * width; x < width; x++, i++) {
      mask[i] = w0 * rows[r0 + x] + w1 * rows[r1 + x] + w2 * rows[r2 + x] + w3 * rows[r3 + x] > 0 ? 1 : 0;
    }
  }
  return mask;
}
