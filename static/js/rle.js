// COCO compressed RLE (column-major run lengths, then COCO's 6-bit string form), as pycocotools has it.

// mask: Uint8Array of height*width in row-major order (non-zero = inside).
export function encodeMask(mask, height, width) {
  const runs = [];
  let current = 0;
  let length = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0, i = x; y < height; y++, i += width) {
      const value = mask[i] ? 1 : 0;
      if (value !== current) {
        runs.push(length);
        length = 0;
        current = value;
      }
      length++;
    }
  }
  runs.push(length);
  return { size: [height, width], counts: runsToString(runs) };
}

function runsToString(runs) {
  let out = "";
  for (let i = 0; i < runs.length; i++) {
    // Each run after the second is stored as the difference from the run two back.
    let x = i > 2 ? runs[i] - runs[i - 2] : runs[i];
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x >>= 5;
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      out += String.fromCharCode(c + 48);
    }
  }
  return out;
}

export function decodeMask(rle) {
  const [height, width] = rle.size;
  const runs = [];
  const s = rle.counts;
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = true;
    let c = 0;
    while (more) {
      c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (runs.length > 2) x += runs[runs.length - 2];
    runs.push(x);
  }
  const mask = new Uint8Array(height * width);
  let index = 0;
  let value = 0;
  for (const run of runs) {
    for (let j = 0; j < run; j++, index++) {
      if (value) {
        const y = index % height;
        const x = (index - y) / height;
        mask[y * width + x] = 1;
      }
    }
    value ^= 1;
  }
  return mask;
}
