// The embedding blob (byte layout in segmentation/sam/embedding_codec.py): header, then the tensor.
// decodeEmbedding reads format versions 1 and 2, every dtype (float32, float16, uint8), and inflates deflated
// data natively (DecompressionStream). The data is copied at most once on its way to the Float32Array the
// decoder needs: inflating writes into one buffer that is then viewed in place, and float16/uint8 values
// are converted straight from a view of that buffer (or of the blob) into the output.

const MAGIC = "SAMEMB";
const PREFIX = 12; // magic, uint16 version, uint32 header length
const ALIGNMENT = 16;
const ITEM_SIZE = { float32: 4, float16: 2, uint8: 1 };

const aligned = (n) => n + ((ALIGNMENT - (n % ALIGNMENT)) % ALIGNMENT);

export async function decodeEmbedding(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < PREFIX || String.fromCharCode(...bytes.subarray(0, 6)) !== MAGIC) {
    throw new Error("not an embedding blob");
  }
  const view = new DataView(buffer);
  const version = view.getUint16(6, true);
  if (version !== 1 && version !== 2) throw new Error(`embedding format version ${version} is not supported`);
  const headerLength = view.getUint32(8, true);
  if (PREFIX + headerLength > bytes.length) throw new Error("truncated embedding header");
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(PREFIX, PREFIX + headerLength)));
  const { model, shape, dtype } = header;
  if (!Array.isArray(shape) || !shape.every((n) => Number.isInteger(n) && n > 0)) {
    throw new Error("bad embedding shape");
  }
  const itemSize = ITEM_SIZE[dtype];
  if (!itemSize || (version === 1 && dtype === "uint8")) throw new Error(`embedding dtype ${dtype} is not supported`);
  const count = shape.reduce((a, b) => a * b, 1);
  const expected = count * itemSize;
  const bodyStart = aligned(PREFIX + headerLength);
  const section =
    version === 1 ? { offset: 0, length: expected, filter: "none", compression: "none" } : header.data;
  const start = bodyStart + section.offset;
  if (start + section.length > bytes.length) throw new Error("truncated embedding data");

  let raw; // the tensor's bytes in `dtype`, after `filter`: a view of the blob or the inflated buffer
  if (section.compression === "deflate") raw = await inflate(bytes.subarray(start, start + section.length), expected);
  else if (section.compression === "none" && section.length === expected) raw = bytes.subarray(start, start + expected);
  else throw new Error("bad embedding data section");

  let data;
  if (dtype === "float32") {
    // A view of the blob would pin the whole blob; an inflated buffer is ours already, so view it.
    const floats = new Float32Array(raw.buffer, raw.byteOffset, count);
    data = raw.buffer === buffer ? floats.slice() : floats;
  } else if (dtype === "float16") {
    data = halfToFloat(new Uint16Array(raw.buffer, raw.byteOffset, count));
  } else {
    if (shape.length < 2) throw new Error("a quantised embedding needs at least two axes");
    const planes = count / (shape[shape.length - 1] * shape[shape.length - 2]);
    const { offset, count: scaleCount } = header.scales;
    if (scaleCount !== planes || bodyStart + offset + 8 * planes > bytes.length) {
      throw new Error("bad embedding scales section");
    }
    // float32 scale[planes], then float32 minimum[planes]: 16-byte aligned, so viewed in place.
    const scales = new Float32Array(buffer, bodyStart + offset, 2 * planes);
    data = dequantise(raw, scales, shape, section.filter);
  }
  return { model, shape, data };
}

// Inflates zlib data into a buffer of exactly `expected` bytes: the one copy of the data.
async function inflate(compressed, expected) {
  const out = new Uint8Array(expected);
  const stream = new DecompressionStream("deflate");
  const writer = stream.writable.getWriter();
  // Errors of a corrupt stream surface on the reading side; these promises must not go unhandled.
  writer.write(compressed).catch(() => {});
  writer.close().catch(() => {});
  const reader = stream.readable.getReader();
  let filled = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (filled + value.length > expected) throw new Error("embedding data inflates to more than its header says");
      out.set(value, filled);
      filled += value.length;
    }
  } catch (error) {
    reader.cancel().catch(() => {});
    throw new Error(`embedding data does not inflate: ${error.message || error}`);
  }
  if (filled !== expected) throw new Error("embedding data inflates to less than its header says");
  return out;
}

// uint8 -> float32, value = minimum + scale * q per plane (one (H, W) slice). The arithmetic is float64 and
// rounded once on storing, exactly as embedding_codec.decode computes it, so both agree bit for bit.
function dequantise(q, scales, shape, filter) {
  if (filter !== "none" && filter !== "delta-rows") throw new Error(`embedding filter ${filter} is not supported`);
  const width = shape[shape.length - 1];
  const height = shape[shape.length - 2];
  const planes = scales.length / 2;
  const out = new Float32Array(q.length);
  const row = new Uint8Array(width); // the current row's values; Uint8Array stores wrap modulo 256
  for (let p = 0, i = 0; p < planes; p++) {
    const scale = scales[p];
    const minimum = scales[planes + p];
    if (filter === "delta-rows") {
      // Each stored row is the difference to the row above (mod 256): add it to the running row.
      row.fill(0);
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++, i++) {
          row[x] += q[i];
          out[i] = minimum + scale * row[x];
        }
      }
    } else {
      for (const end = i + width * height; i < end; i++) out[i] = minimum + scale * q[i];
    }
  }
  return out;
}

let halfTable = null;

function halfToFloat(halves) {
  if (!halfTable) {
    // All 65,536 float16 values once; then conversion is one lookup per element.
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1;
      const exponent = (h >> 10) & 0x1f;
      const fraction = h & 0x3ff;
      if (exponent === 0) halfTable[h] = sign * 2 ** -14 * (fraction / 1024);
      else if (exponent === 31) halfTable[h] = fraction ? NaN : sign * Infinity;
      else halfTable[h] = sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
    }
  }
  const out = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i++) out[i] = halfTable[halves[i]];
  return out;
}
