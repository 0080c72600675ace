"""In Chromium, static/js/embedding.js decodes every blob Python writes (each dtype, deflated or not, and
format-version-1 and -2 blobs) to exactly what embedding_codec.decode gives, and refuses damaged ones."""

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


def as_version_2(blob: bytes) -> bytes:
    """Version 3 only added rans: a version-2 blob is a version-3 one with its version field at 2."""
    return blob[:6] + struct.pack("<H", 2) + blob[8:]


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
    # Rate control, residuals with more than 16 raw bits, 8-column lanes, an unmeasured model's weights.
    noise = np.random.default_rng(0).normal(scale=0.1, size=(1, 256, 64, 64)).astype(np.float32)
    out["rans-noise"] = embedding_codec.encode(noise, model_key="mobile_sam", dtype="rans")
    spikes = np.zeros((1, 16, 64, 40), dtype=np.float32)
    spikes[0, :, 3, 5] = 1000
    out["rans-spikes"] = embedding_codec.encode(spikes, model_key="other", dtype="rans")
    out["v2-uint8"] = as_version_2(out["uint8-deflate"])
    out["v2-float16"] = as_version_2(out["float16-none"])
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
    assert np.array_equal(data.view(np.uint32), expected.view(np.uint32)), name  # bit for bit
    print(f"{name}: {len(blob):,} bytes decoded in {result['ms']:.1f} ms")


def test_browser_decode_time_of_the_default(page: Page, stack: Stack) -> None:
    """The rans decoder runs on every image switch: median of 5 decodes of the astronaut's blob."""
    blob = embedding_codec.encode(astronaut(), model_key="mobile_sam")
    page.goto(f"{stack.url}/accounts/login/")
    times = [page.evaluate(DECODE, {"blobB64": base64.b64encode(blob).decode()})["ms"] for _ in range(5)]
    print(f"default ({len(blob):,} bytes): decoded in {sorted(times)[2]:.1f} ms (median of 5; all: {times})")
    assert sorted(times)[2] < 1000


def data_start(blob: bytes) -> int:
    (header_len,) = struct.unpack_from("<I", blob, 8)
    meta = json.loads(blob[12 : 12 + header_len])
    return 12 + header_len + (-(12 + header_len) % 16) + meta["data"]["offset"]


def flipped(blob: bytes, start: int) -> bytes:
    return blob[:start] + bytes(b ^ 0x55 for b in blob[start : start + 64]) + blob[start + 64 :]


def test_browser_refuses_damaged_blobs(page: Page, stack: Stack) -> None:
    blob = embedding_codec.encode(astronaut(), model_key="mobile_sam", dtype="uint8", compression="deflate")
    rans = embedding_codec.encode(astronaut(), model_key="mobile_sam", dtype="rans")
    damaged = {
        "foreign": b"PNG...................." * 4,
        "future version": blob[:6] + struct.pack("<H", 4) + blob[8:],
        "truncated": blob[: len(blob) - 1000],
        "corrupt deflate": flipped(blob, data_start(blob)),
        "rans in a version-2 blob": as_version_2(rans),
        "truncated rans": rans[: len(rans) - 2],
        "corrupt rans": flipped(rans, data_start(rans) + 40_000),
    }
    page.goto(f"{stack.url}/accounts/login/")
    for name, bad in damaged.items():
        error = page.evaluate(REFUSE, {"blobB64": base64.b64encode(bad).decode()})
        assert error, f"{name} was accepted"
