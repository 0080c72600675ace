// The embedding blob (see segmentation/sam/embedding_codec.py): header, then the tensor.

const MAGIC = "SAMEMB";

export function decodeEmbedding(buffer) {
  const bytes = new Uint8Array(buffer);
  if (String.fromCharCode(...bytes.subarray(0, 6)) !== MAGIC) throw new Error("not an embedding blob");
  const view = new DataView(buffer);
  const version = view.getUint16(6, true);
  if (version !== 1) throw new Error(`embedding format version ${version} is not supported`);
  const headerLength = view.getUint32(8, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + headerLength)));
  let offset = 12 + headerLength;
  offset += (16 - (offset % 16)) % 16;
  const count = header.shape.reduce((a, b) => a * b, 1);
  let data;
  if (header.dtype === "float32") data = new Float32Array(buffer, offset, count).slice();
  else if (header.dtype === "float16") data = halfToFloat(new Uint16Array(buffer, offset, count));
  else throw new Error(`embedding dtype ${header.dtype} is not supported`);
  return { model: header.model, shape: header.shape, data };
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
