"""In Chromium, static/js/embedding.js decodes every blob Python writes (each dtype, deflated or not, and
format-version-1 blobs) to what embedding_codec.decode gives, and refuses damaged ones."""

import base64
import json
import struct

import numpy as np
import pytest
from playwright.sync_api import Page

from segmentation.sam import embedding_codec
from tests.conftest import FIXTURES
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

DECODE = """
async ({ blobB64 }) => {
  const bytes = Uint8Array.from(atob(blobB64), (c) => c.charCodeAt(0));
  const { decodeEmbedding } = await import("/static/js/embedding.js");
  const started = performance.now();
  const { model, shape, data } = await decodeEmbedding(bytes.buffer);
  const ms = performance.now() - started;
  const out = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let text = "";
  for (let i = 0; i < out.length; i += 0x8000) text += String.fromCharCode(...out.subarray(i, i + 0x8000));
  return { model, shape, isFloat32: data instanceof Float32Array, data: btoa(text), ms };
}
"""

REFUSE = """
async ({ blobB64 }) => {
  const bytes = Uint8Array.from(atob(blobB64), (c) => c.charCodeAt(0));
  const { decodeEmbedding } = await import("/static/js/embedding.js");
  try {
    await decodeEmbedding(bytes.buffer);
    return null;
  } catch (error) {
    return String(error.message || error);
  }
}
"""


def astronaut() -> np.ndarray:
    with np.load(FIXTURES / "mobile_sam" / "astronaut.embedding.npz") as data:
        return np.asarray(data["embedding"], dtype=np.float32)


def encode_v1(embedding: np.ndarray, model_key: str, dtype: str) -> bytes:
    """Byte for byte what the format-version-1 encoder wrote."""
    header = json.dumps({"model": model_key, "shape": list(embedding.shape), "dtype": dtype}).encode()
    prefix = b"SAMEMB" + struct.pack("<HI", 1, len(header)) + header
    return prefix + b"\0" * (-len(prefix) % 16) + embedding.astype("<" + np.dtype(dtype).str[1:]).tobytes()


def blobs() -> dict[str, bytes]:
    embedding = astronaut()
    out = {
        f"{dtype}-{compression}": embedding_codec.encode(
            embedding, model_key="mobile_sam", dtype=dtype, compression=compression
        )
        for dtype in ("uint8", "float16", "float32")
        for compression in ("none", "deflate")
    }
    out["default"] = embedding_codec.encode(embedding, model_key="mobile_sam")
    out["v1-float16"] = encode_v1(embedding, "mobile_sam", "float16")
    out["v1-float32"] = encode_v1(embedding, "mobile_sam", "float32")
    return out


@pytest.mark.parametrize("name", list(blobs()))
def test_browser_decodes_like_python(page: Page, stack: Stack, name: str) -> None:
    blob = blobs()[name]
    header, expected = embedding_codec.decode(blob)
    page.goto(f"{stack.url}/accounts/login/")
    result = page.evaluate(DECODE, {"blobB64": base64.b64encode(blob).decode()})
    assert result["model"] == header.model
    assert tuple(result["shape"]) == header.shape
    assert result["isFloat32"]
    data = np.frombuffer(base64.b64decode(result["data"]), dtype="<f4").reshape(header.shape)
    assert np.abs(data - expected).max() <= 1e-6, name
    print(f"{name}: {len(blob):,} bytes decoded in {result['ms']:.1f} ms")


def test_browser_refuses_damaged_blobs(page: Page, stack: Stack) -> None:
    blob = embedding_codec.encode(astronaut(), model_key="mobile_sam", dtype="uint8", compression="deflate")
    (header_len,) = struct.unpack_from("<I", blob, 8)
    meta = json.loads(blob[12 : 12 + header_len])
    data_start = 12 + header_len + (-(12 + header_len) % 16) + meta["data"]["offset"]
    damaged = {
        "foreign": b"PNG...................." * 4,
        "future version": blob[:6] + struct.pack("<H", 3) + blob[8:],
        "truncated": blob[: len(blob) - 1000],
        "corrupt deflate": blob[:data_start]
        + bytes(b ^ 0x55 for b in blob[data_start : data_start + 64])
        + blob[data_start + 64 :],
    }
    page.goto(f"{stack.url}/accounts/login/")
    for name, bad in damaged.items():
        error = page.evaluate(REFUSE, {"blobB64": base64.b64encode(bad).decode()})
        assert error, f"{name} was accepted"
