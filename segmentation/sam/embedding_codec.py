"""The embedding blob shipped to the browser: a small versioned header, then the tensor.

Layout, format version 2 (little-endian; what `encode` writes):

    6 bytes   magic b"SAMEMB"
    2 bytes   uint16 format version (2)
    4 bytes   uint32 length n of the JSON header
    n bytes   JSON header, UTF-8, e.g. for the default dtype
                {"model": "mobile_sam", "shape": [1, 256, 64, 64], "dtype": "uint8",
                 "scales": {"offset": 0, "count": 256},
                 "data": {"offset": 2048, "length": 868189, "filter": "delta-rows", "compression": "deflate"}}
    padding   zero bytes up to a multiple of 16: the body starts here
    body      the sections named in the header, each at `offset` bytes from the body start (a multiple of
              16, so the browser can view it in place as a typed array):
      scales  uint8 only: float32 scale[count], then float32 minimum[count], one pair per plane, where a
              plane is one (H, W) slice of the tensor, i.e. one channel of a (1, C, H, W) embedding
      data    `length` bytes: the tensor in C order, in `dtype`, after `filter`, then `compression`:
              filter       "none", or "delta-rows" (uint8 only): each row of a plane is stored minus the
                           row above it, modulo 256 (the first row as is); neighbouring rows of an
                           embedding are alike, so the differences are small numbers that deflate well
              compression  "none", or "deflate" (zlib format, RFC 1950: what the browser's
                           DecompressionStream("deflate") reads)

dtypes:
    float32   exact; 4 MiB for (1, 256, 64, 64)
    float16   2 MiB
    uint8     per-plane affine 8 bits, value = minimum + scale * q with q in 0..255 (per-channel scales
              because the channels of an embedding span ranges from ~0.002 to ~0.6 in absolute value);
              1 MiB before deflate, about 0.75-0.85 MiB after it for the MobileSAM fixture embeddings
              (benchmarks/RESULTS.md, "Payload"). The default.

Dequantisation is defined in float64 then rounded to float32, which is exactly what JavaScript's
`min + scale * q` stored into a Float32Array computes, so the browser and `decode` agree bit for bit.

Format version 1 (still decoded: blobs stored before version 2 exist) had the same first 12 bytes, the
JSON header {"model", "shape", "dtype"} with dtype float16 or float32, the padding, then the raw data.

The model key travels with the data so a browser never pairs an embedding with another model's decoder.
"""

import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"SAMEMB"
VERSION = 2
READABLE_VERSIONS = (1, 2)
CONTENT_TYPE = "application/x-sam-embedding"
# float16 (2 MiB) keeps every fixture mask at IoU >= 0.999 against float32; uint8 fits in
# 1 MiB but moves two fixture masks to IoU 0.971 and 0.987 (benchmarks/RESULTS.md, "Payload"), so it is
# an opt-in setting (EMBEDDING_DTYPE) for deployments that trade exactness for bandwidth.
DEFAULT_DTYPE = "float16"
ALIGNMENT = 16
# zlib level: 6 and 9 give the same sizes within 0.1% on the fixtures, 9 costs ~40% more time.
DEFLATE_LEVEL = 6

_FLOAT_DTYPES: dict[str, np.dtype[Any]] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
_QUANTISED_DTYPES: dict[str, np.dtype[Any]] = {"uint8": np.dtype("u1")}
_DTYPES = {**_FLOAT_DTYPES, **_QUANTISED_DTYPES}
_FILTERS = ("none", "delta-rows")
_COMPRESSIONS = ("none", "deflate")
_PREFIX = struct.Struct("<6sHI")


class InvalidEmbedding(ValueError):
    pass


@dataclass(frozen=True)
class EmbeddingHeader:
    model: str
    shape: tuple[int, ...]
    dtype: str
    version: int = VERSION
    compression: str = "none"


def _aligned(n: int) -> int:
    return n + (-n % ALIGNMENT)


def _planes(shape: tuple[int, ...]) -> int:
    """Number of (H, W) planes: the product of every axis but the last two."""
    return math.prod(shape[:-2])


def encode(
    embedding: np.ndarray, *, model_key: str, dtype: str = DEFAULT_DTYPE, compression: str | None = None
) -> bytes:
    """(1, 256, 64, 64) float32 embedding -> version-2 blob in `dtype` (uint8, float16 or float32).

    compression: None deflates quantised dtypes only (the usual choice); "none" or "deflate" force one.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported embedding dtype {dtype!r}")
    if compression is not None and compression not in _COMPRESSIONS:
        raise ValueError(f"unsupported compression {compression!r}")
    array = np.ascontiguousarray(embedding, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError("the embedding has non-finite values")
    sections: dict[str, Any] = {}
    body: list[bytes] = []
    if dtype in _QUANTISED_DTYPES:
        if array.ndim < 2:
            raise ValueError("a quantised embedding needs at least two axes (rows and columns)")
        scales, minimums, q = _quantise(array)
        sections["scales"] = {"offset": 0, "count": len(scales)}
        body.append(scales.astype("<f4").tobytes() + minimums.astype("<f4").tobytes())
        data_filter = "delta-rows"
        raw = _delta_rows(q).tobytes()
    else:
        data_filter = "none"
        raw = array.astype(_FLOAT_DTYPES[dtype]).tobytes()
    if compression is None:
        # Deflate where it pays: quantised levels shrink by ~20%, float mantissas by ~10% at ~60 ms of
        # worker CPU per image, which would cap a GPU worker's throughput; floats stay raw.
        compression = "deflate" if dtype in _QUANTISED_DTYPES else "none"
    data = zlib.compress(raw, DEFLATE_LEVEL) if compression == "deflate" else raw
    data_offset = _aligned(sum(len(part) for part in body))
    if body:
        body[-1] += b"\0" * (data_offset - len(body[-1]))
    sections["data"] = {"offset": data_offset, "length": len(data), "filter": data_filter, "compression": compression}
    meta = {"model": model_key, "shape": list(array.shape), "dtype": dtype, **sections}
    header = json.dumps(meta, separators=(",", ":")).encode()
    prefix = _PREFIX.pack(MAGIC, VERSION, len(header)) + header
    return prefix + b"\0" * (-len(prefix) % ALIGNMENT) + b"".join(body) + data


def decode(blob: bytes) -> tuple[EmbeddingHeader, np.ndarray]:
    """Blob (format version 1 or 2) -> (header, float32 array of header.shape)."""
    if len(blob) < _PREFIX.size or blob[:6] != MAGIC:
        raise InvalidEmbedding("not an embedding blob")
    _, version, header_len = _PREFIX.unpack_from(blob)
    if version not in READABLE_VERSIONS:
        raise InvalidEmbedding(f"embedding format version {version} is not supported")
    if _PREFIX.size + header_len > len(blob):
        raise InvalidEmbedding("truncated embedding header")
    try:
        meta = json.loads(blob[_PREFIX.size : _PREFIX.size + header_len])
        model, shape, dtype = str(meta["model"]), tuple(int(n) for n in meta["shape"]), str(meta["dtype"])
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidEmbedding(f"bad embedding header: {error}") from error
    if any(n <= 0 for n in shape) or dtype not in (_FLOAT_DTYPES if version == 1 else _DTYPES):
        raise InvalidEmbedding(f"unsupported embedding shape {shape} or dtype {dtype!r}")
    body = memoryview(blob)[_aligned(_PREFIX.size + header_len) :]
    count = math.prod(shape)
    try:
        if version == 1:
            data = _float_data(body, 0, count * _DTYPES[dtype].itemsize, "none", dtype, count)
            return EmbeddingHeader(model, shape, dtype, version), data.reshape(shape)
        section = meta["data"]
        offset, length = int(section["offset"]), int(section["length"])
        data_filter, compression = str(section["filter"]), str(section["compression"])
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidEmbedding(f"bad embedding header: {error}") from error
    if data_filter not in _FILTERS or compression not in _COMPRESSIONS or offset < 0 or offset + length > len(body):
        raise InvalidEmbedding("bad embedding data section")
    header = EmbeddingHeader(model, shape, dtype, version, compression)
    if dtype in _FLOAT_DTYPES:
        if data_filter != "none":
            raise InvalidEmbedding(f"filter {data_filter!r} does not apply to {dtype}")
        return header, _float_data(body, offset, length, compression, dtype, count).reshape(shape)
    return header, _quantised_data(meta, body, offset, length, data_filter, compression, shape)


def _quantise(array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 (..., H, W) -> (scale[P], minimum[P], uint8 q of the same shape), P planes.

    Asymmetric (min..max onto 0..255) rather than symmetric: the same 8 bits cover only the range a
    channel uses, which halves the step for channels that are mostly of one sign; measured, it also
    keeps more fixture masks intact than symmetric int8 (benchmarks/payload.py).
    """
    planes = array.reshape(_planes(array.shape), -1)
    minimum = planes.min(axis=1).astype(np.float32)
    scale = ((planes.max(axis=1).astype(np.float64) - minimum) / 255).astype(np.float32)
    # Quantise against the float32 scale and minimum actually stored, so rounding to nearest holds
    # for the values the decoder reconstructs; a constant plane has scale 0 and decodes to its minimum.
    safe = np.where(scale > 0, scale, 1).astype(np.float64)
    q = np.rint((planes - minimum.astype(np.float64)[:, None]) / safe[:, None])
    return scale, minimum, np.clip(q, 0, 255).astype(np.uint8).reshape(array.shape)


def _delta_rows(q: np.ndarray) -> np.ndarray:
    """Each row minus the row above it, modulo 256 (uint8 arithmetic wraps); the first row as is."""
    return np.diff(q, axis=-2, prepend=np.zeros_like(q[..., :1, :]))


def _payload(body: memoryview, offset: int, length: int, compression: str, expected: int) -> bytes | memoryview:
    raw: bytes | memoryview = body[offset : offset + length]
    if compression == "deflate":
        try:
            inflater = zlib.decompressobj()
            # Bounded: a corrupt or hostile blob cannot make us inflate more than the header promises.
            raw = inflater.decompress(raw, expected + 1)
        except zlib.error as error:
            raise InvalidEmbedding(f"embedding data does not inflate: {error}") from error
    if len(raw) != expected:
        raise InvalidEmbedding(f"embedding data has {len(raw)} bytes, the header promises {expected}")
    return raw


def _float_data(body: memoryview, offset: int, length: int, compression: str, dtype: str, count: int) -> np.ndarray:
    raw = _payload(body, offset, length, compression, count * _DTYPES[dtype].itemsize)
    return np.frombuffer(raw, dtype=_FLOAT_DTYPES[dtype], count=count).astype(np.float32)


def _quantised_data(
    meta: dict[str, Any],
    body: memoryview,
    offset: int,
    length: int,
    data_filter: str,
    compression: str,
    shape: tuple[int, ...],
) -> np.ndarray:
    if len(shape) < 2:
        raise InvalidEmbedding("a quantised embedding needs at least two axes")
    planes = _planes(shape)
    try:
        scales_offset, scales_count = int(meta["scales"]["offset"]), int(meta["scales"]["count"])
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidEmbedding(f"bad embedding scales: {error}") from error
    if scales_count != planes or scales_offset < 0 or scales_offset + 8 * planes > len(body):
        raise InvalidEmbedding("bad embedding scales section")
    pairs = np.frombuffer(body, dtype="<f4", count=2 * planes, offset=scales_offset).astype(np.float64)
    scale, minimum = pairs[:planes], pairs[planes:]
    raw = _payload(body, offset, length, compression, math.prod(shape))
    q = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
    if data_filter == "delta-rows":
        q = np.cumsum(q, axis=-2, dtype=np.uint8)  # wraps modulo 256, undoing _delta_rows
    values = minimum[:, None] + scale[:, None] * q.reshape(planes, -1)
    return values.astype(np.float32).reshape(shape)
