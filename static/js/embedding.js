// The embedding blob (byte layout in segmentation/sam/embedding_codec.py): header, then the tensor.
// decodeEmbedding reads format versions 1 to 3, every dtype (float32, float16, uint8, rans), and inflates
// deflated data natively (DecompressionStream). The data is copied at most once on its way to the
// Float32Array the decoder needs: inflating writes into one buffer that is then viewed in place,
// float16/uint8 values are converted straight from a view of that buffer (or of the blob) into the
// output, and rans words are decoded from a view of the blob into the output, a row at a time.

const MAGIC = "SAMEMB";
const PREFIX = 12; // magic, uint16 version, uint32 header length
const ALIGNMENT = 16;
const ITEM_SIZE = { float32: 4, float16: 2, uint8: 1 };
// The dtypes each format version can hold (version 3 added rans).
const VERSION_DTYPES = {
  1: ["float32", "float16"],
  2: ["float32", "float16", "uint8"],
  3: ["float32", "float16", "uint8", "rans"],
};

const aligned = (n) => n + ((ALIGNMENT - (n % ALIGNMENT)) % ALIGNMENT);

export async function decodeEmbedding(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < PREFIX || String.fromCharCode(...bytes.subarray(0, 6)) !== MAGIC) {
    throw new Error("not an embedding blob");
  }
  const view = new DataView(buffer);
  const version = view.getUint16(6, true);
  if (!VERSION_DTYPES[version]) throw new Error(`embedding format version ${version} is not supported`);
  const headerLength = view.getUint32(8, true);
  if (PREFIX + headerLength > bytes.length) throw new Error("truncated embedding header");
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(PREFIX, PREFIX + headerLength)));
  const { model, shape, dtype } = header;
  if (!Array.isArray(shape) || !shape.every((n) => Number.isInteger(n) && n > 0)) {
    throw new Error("bad embedding shape");
  }
  if (!VERSION_DTYPES[version].includes(dtype)) throw new Error(`embedding dtype ${dtype} is not supported`);
  const count = shape.reduce((a, b) => a * b, 1);
  const bodyStart = aligned(PREFIX + headerLength);
  if (dtype === "rans") return { model, shape, data: decodeRans(buffer, bodyStart, header, shape) };
  const itemSize = ITEM_SIZE[dtype];
  const expected = count * itemSize;
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

// rans (segmentation/sam/embedding_rans.py has the format): integer levels q, MED-predicted, the
// residuals zig-zagged into a token plus raw bits and rANS-coded in lanes of `lane_width` columns that
// share one stream of 16-bit words; value = step * q per plane. Integer arithmetic throughout, then the
// same float64 product rounded to float32 as embedding_codec.decode, so both agree bit for bit.
const RANS = {
  probBits: 12,
  stateLow: 65536, // states live in [2^16, 2^32): a Uint32Array, and >>> keeps them unsigned
  directTokens: 16,
  rawChunk: 16,
  maxContexts: 64,
  maxTokens: 68,
};

function decodeRans(buffer, bodyStart, header, shape) {
  if (shape.length < 2) throw new Error("a quantised embedding needs at least two axes");
  const { steps: stepsSection, tables, data: section, contexts: thresholds } = header;
  const width = shape[shape.length - 1];
  const height = shape[shape.length - 2];
  const planes = shape.reduce((a, b) => a * b, 1) / (width * height);
  const laneWidth = section?.lane_width;
  if (section?.filter !== "med" || section.compression !== "rans") throw new Error("bad embedding data section");
  if (!Number.isInteger(laneWidth) || laneWidth <= 0 || width % laneWidth || section.length % 2) {
    throw new Error("bad embedding data section");
  }
  const contexts = tables?.contexts;
  const symbols = tables?.symbols;
  if (
    !Array.isArray(thresholds) ||
    !Number.isInteger(contexts) ||
    !Number.isInteger(symbols) ||
    contexts !== thresholds.length + 1 ||
    contexts > RANS.maxContexts ||
    symbols <= 0 ||
    symbols > RANS.maxTokens ||
    thresholds.some((t, i) => !Number.isInteger(t) || (i > 0 && t <= thresholds[i - 1]))
  ) {
    throw new Error("bad embedding tables section");
  }
  const inBody = (offset, bytes) => Number.isInteger(offset) && offset >= 0 && bodyStart + offset + bytes <= buffer.byteLength;
  if (stepsSection?.count !== planes || !inBody(stepsSection.offset, 4 * planes)) {
    throw new Error("bad embedding steps section");
  }
  if (!inBody(tables.offset, 2 * contexts * symbols) || !inBody(section.offset, section.length)) {
    throw new Error("truncated embedding data");
  }
  // All three sections start 16-byte aligned (and uint16 words are little-endian, as every browser is).
  const steps = new Float32Array(buffer, bodyStart + stepsSection.offset, planes);
  const frequencies = new Uint16Array(buffer, bodyStart + tables.offset, contexts * symbols);
  const words = new Uint16Array(buffer, bodyStart + section.offset, section.length / 2);
  const model = tokenModel(frequencies, contexts, symbols);
  const contextOf = contextLookup(thresholds);
  const out = new Float32Array(planes * height * width);
  const toValues = levelRows(out, steps, { planes, height, width });
  let y = 0;
  for (const residuals of decodeResiduals(words, model, contextOf, thresholds.length, { planes, height, width, laneWidth })) {
    toValues(residuals, y++);
  }
  return out;
}

// Per context, for each of the 4096 slots: its token (255: a context without frequencies), and per
// token its frequency and cumulative start.
function tokenModel(frequencies, contexts, symbols) {
  const scale = 1 << RANS.probBits;
  const tokenOf = new Uint8Array(contexts * scale).fill(255);
  const starts = new Uint16Array(contexts * symbols);
  for (let c = 0; c < contexts; c++) {
    let start = 0;
    for (let t = 0; t < symbols; t++) {
      const f = frequencies[c * symbols + t];
      starts[c * symbols + t] = start;
      tokenOf.fill(t, c * scale + start, c * scale + Math.min(scale, start + f));
      start += f;
    }
    if (start !== 0 && start !== scale) throw new Error(`an embedding context's frequencies do not sum to ${scale}`);
  }
  const rawBits = new Uint8Array(symbols);
  const base = new Float64Array(symbols);
  for (let t = 0; t < symbols; t++) {
    if (t < RANS.directTokens) {
      base[t] = t;
    } else {
      rawBits[t] = 3 + ((t - RANS.directTokens) >> 1);
      base[t] = (2 + ((t - RANS.directTokens) & 1)) * 2 ** rawBits[t];
    }
  }
  return { tokenOf, starts, frequencies, symbols, rawBits, base };
}

// Activity sum -> context: the number of thresholds at or below it.
function contextLookup(thresholds) {
  const last = thresholds.length ? thresholds[thresholds.length - 1] : 0;
  const table = new Uint8Array(last + 1);
  for (let s = 0, c = 0; s <= last; s++) {
    while (c < thresholds.length && thresholds[c] <= s) c++;
    table[s] = c;
  }
  return table;
}

// Yields each row's residuals (planes x width, Int32Array reused between rows), in the order
// embedding_rans.py codes them: per row, per column j of the lanes, every lane's token, then the high
// raw bits of the tokens with more than 16, then every lane's low raw bits; a lane whose state falls
// below 2^16 takes the next word. Lane l covers entries l * laneWidth .. of the (plane, column) row.
function* decodeResiduals(words, model, contextOf, lastContext, { planes, height, width, laneWidth }) {
  const { tokenOf, starts, frequencies, symbols, rawBits, base } = model;
  const lanes = planes * (width / laneWidth);
  const end = words.length;
  if (end < 2 * lanes) throw new Error("embedding data does not decode: too short");
  const state = new Uint32Array(lanes);
  for (let l = 0; l < lanes; l++) state[l] = words[2 * l] + words[2 * l + 1] * 65536; // low word first
  let position = 2 * lanes;
  const row = new Int32Array(planes * width);
  const above = new Int32Array(planes * width); // |r| of the row above, and of the one above that
  const aboveTwo = new Int32Array(planes * width);
  const context = new Uint8Array(planes * width);
  const tokens = new Uint8Array(lanes);
  const highs = new Uint32Array(lanes);
  const mask = (1 << RANS.probBits) - 1;
  const endedEarly = () => new Error("embedding data does not decode: it ends early");
  for (let y = 0; y < height; y++) {
    for (let p = 0, i = 0; p < planes; p++) {
      for (let x = 0; x < width; x++, i++) {
        const left = x > 0 ? above[i - 1] : 0;
        const right = x < width - 1 ? above[i + 1] : 0;
        const sum = left + 2 * above[i] + right + aboveTwo[i];
        context[i] = sum < contextOf.length ? contextOf[sum] : lastContext;
      }
    }
    for (let j = 0; j < laneWidth; j++) {
      let anyHigh = false;
      for (let l = 0, i = j; l < lanes; l++, i += laneWidth) {
        const c = context[i];
        let s = state[l];
        const slot = s & mask;
        const t = tokenOf[(c << RANS.probBits) + slot];
        if (t === 255) throw new Error("embedding data does not decode: a context without frequencies");
        const k = c * symbols + t;
        s = frequencies[k] * (s >>> RANS.probBits) + slot - starts[k];
        if (s < RANS.stateLow) {
          if (position >= end) throw endedEarly();
          s = s * 65536 + words[position++];
        }
        state[l] = s;
        tokens[l] = t;
        if (rawBits[t] > RANS.rawChunk) anyHigh = true;
      }
      if (anyHigh) {
        for (let l = 0; l < lanes; l++) {
          const high = rawBits[tokens[l]] - RANS.rawChunk;
          if (high <= 0) {
            highs[l] = 0;
            continue;
          }
          let s = state[l];
          highs[l] = s & ((1 << high) - 1);
          s >>>= high;
          if (s < RANS.stateLow) {
            if (position >= end) throw endedEarly();
            s = s * 65536 + words[position++];
          }
          state[l] = s;
        }
      }
      for (let l = 0, i = j; l < lanes; l++, i += laneWidth) {
        const t = tokens[l];
        if (t < RANS.directTokens) {
          row[i] = t & 1 ? -((t + 1) >> 1) : t >> 1;
          continue;
        }
        const n = Math.min(rawBits[t], RANS.rawChunk);
        let s = state[l];
        const low = s & ((1 << n) - 1);
        s >>>= n;
        if (s < RANS.stateLow) {
          if (position >= end) throw endedEarly();
          s = s * 65536 + words[position++];
        }
        state[l] = s;
        const z = base[t] + (anyHigh ? highs[l] * 2 ** n : 0) + low;
        row[i] = z % 2 ? -(z + 1) / 2 : z / 2;
      }
    }
    aboveTwo.set(above);
    for (let i = 0; i < row.length; i++) above[i] = Math.abs(row[i]);
    yield row;
  }
  if (position !== end || state.some((s) => s !== RANS.stateLow)) {
    throw new Error("embedding data does not decode: the stream does not end where its lanes do");
  }
}

// Levels from residuals, a row at a time: MED prediction from the row above and the level to the left
// (first row: from the left; first column: from above); writes value = step * level into `out`.
function levelRows(out, steps, { planes, height, width }) {
  const above = new Int32Array(planes * width);
  const current = new Int32Array(planes * width);
  return (r, y) => {
    for (let p = 0, i = 0; p < planes; p++) {
      const step = steps[p];
      const outRow = (p * height + y) * width;
      for (let x = 0; x < width; x++, i++) {
        let prediction;
        if (y === 0) prediction = x > 0 ? current[i - 1] : 0;
        else if (x === 0) prediction = above[i];
        else {
          const up = above[i];
          const left = current[i - 1];
          const upLeft = above[i - 1];
          const low = up < left ? up : left;
          const high = up < left ? left : up;
          prediction = upLeft >= high ? low : upLeft <= low ? high : up + left - upLeft;
        }
        current[i] = r[i] + prediction;
        out[outRow + x] = step * current[i];
      }
    }
    above.set(current);
  };
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
