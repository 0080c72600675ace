"""The embedding blob shipped to the browser: a small versioned header, then the tensor.

Layout, format version 3 (little-endian; what `encode` writes):

    6 bytes   magic b"SAMEMB"
    2 bytes   uint16 format version (3)
    4 bytes   uint32 length n of the JSON header
    n bytes   JSON header, UTF-8, e.g. for the default dtype
                {"model": "mobile_sam", "shape": [1, 256, 64, 64], "dtype": "rans",
                 "contexts": [4, 6, 8, 11, 14, ..., 32508],
                 "steps": {"offset": 0, "count": 256},
                 "tables": {"offset": 1024, "contexts": 39, "symbols": 35},
                 "data": {"offset": 3760, "length": 1034646, "filter": "med", "compression": "rans",
                          "lane_width": 16}}
    padding   zero bytes up to a multiple of 16: the body starts here
    body      the sections named in the header, each at `offset` bytes from the body start (a multiple of
              16, so the browser can view it in place as a typed array):
      scales  uint8 only: float32 scale[count], then float32 minimum[count], one pair per plane, where a
              plane is one (H, W) slice of the tensor, i.e. one channel of a (1, C, H, W) embedding
      steps   rans only: float32 step[count], one per plane
      tables  rans only: uint16 frequency[contexts][symbols], each row summing to 4096 (or all 0: a
              context no token of this blob falls in)
      data    `length` bytes: the tensor in C order, in `dtype` (rans: its integer levels), after
              `filter`, then `compression`:
              filter       "none"; "delta-rows" (uint8 only): each row of a plane is stored minus the
                           row above it, modulo 256 (the first row as is); neighbouring rows of an
                           embedding are alike, so the differences are small numbers that deflate well;
                           "med" (rans only): each level minus its MED prediction (embedding_rans.py)
              compression  "none"; "deflate" (zlib format, RFC 1950: what the browser's
                           DecompressionStream("deflate") reads); "rans" (rans only): uint16 words of
                           context-modelled rANS in lanes of `lane_width` columns, with `contexts` the
                           activity thresholds between contexts (embedding_rans.py has every detail)

dtypes:
    float32   exact; 4 MiB for (1, 256, 64, 64)
    float16   2 MiB
    uint8     per-plane affine 8 bits, value = minimum + scale * q with q in 0..255 (per-channel scales
              because the channels of an embedding span ranges from ~0.002 to ~0.6 in absolute value);
              about 0.75-0.85 MiB deflated for the MobileSAM fixture embeddings, but two fixture masks
              move to IoU 0.971 and 0.987
    rans      integer levels q, value = step * q with one step per plane, MED-predicted and entropy coded
              (embedding_rans.py): 0.81-0.99 MiB for the MobileSAM fixture embeddings with every fixture
              mask at IoU >= 0.99 against float32 (benchmarks/RESULTS.md, "Payload"). The default.
              The steps put the rounding error where the mask decoder is least sensitive: step =
              RANS_STEP / weight, with per-channel weights measured on the decoder (channel_weights.json,
              from scripts/channel_weights.py; geometric mean 1); a model without measured weights uses
              1 / (max - min) of each plane, as uint8 does. A blob that would exceed one byte per value
              (1 MiB for a 256x64x64 embedding) is coded again with coarser steps, aimed to fit.

Dequantisation is defined in float64 then rounded to float32, which is exactly what JavaScript's
`min + scale * q` (or `step * q`) stored into a Float32Array computes, so the browser and `decode`
agree bit for bit.

Format version 2 (still decoded) is version 3 without the rans dtype. Format version 1 (still decoded:
blobs stored before version 2 exist) had the same first 12 bytes, the JSON header {"model", "shape",
"dtype"} with dtype float16 or float32, the padding, then the raw data.

The model key travels with the data so a browser never pairs an embedding with another model's decoder.
"""

import json
import math
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from . import embedding_rans

MAGIC = b"SAMEMB"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
CONTENT_TYPE = "application/x-sam-embedding"
# rans keeps every fixture mask at IoU >= 0.99 against float32 within 1 MiB; float16 (2 MiB, IoU >= 0.999)
# and uint8 (~0.8 MiB, two fixture masks at 0.971 and 0.987) stay available (EMBEDDING_DTYPE).
DEFAULT_DTYPE = "rans"
ALIGNMENT = 16
# zlib level: 6 and 9 give the same sizes within 0.1% on the fixtures, 9 costs ~40% more time.
DEFLATE_LEVEL = 6
# rans: the quantiser step where the channel weights' geometric mean is 1. Two ill-conditioned fixture
# prompts (coffee/box, chelsea/box_point) pass IoU 0.99 or not by a few pixels, depending on how the
# rounding falls: of 8 rounding patterns (random per-plane offsets) every fixture mask stays >= 0.99 in 4
# at 5e-4, 7 at 4e-4 and 7 at 3e-4. Each halving of the step costs a bit per value; at 4e-4 the fixture
# blobs are 848,242-1,038,838 bytes: the finest step that fits 1 MiB (benchmarks/RESULTS.md, "Payload").
RANS_STEP = 4e-4
RANS_BYTES_PER_VALUE = 1  # the rate control's budget: whole blob, 1 MiB for (1, 256, 64, 64)
RANS_CODING_ATTEMPTS = 4
CHANNEL_WEIGHTS = Path(__file__).with_name("channel_weights.json")

_FLOAT_DTYPES: dict[str, np.dtype[Any]] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
_QUANTISED_DTYPES: dict[str, np.dtype[Any]] = {"uint8": np.dtype("u1")}
_DTYPES = {**_FLOAT_DTYPES, **_QUANTISED_DTYPES}
_CODED_DTYPES = ("rans",)  # levels entropy coded by embedding_rans: no fixed item size
# Which dtypes each format version can hold.
_VERSION_DTYPES = {1: tuple(_FLOAT_DTYPES), 2: tuple(_DTYPES), 3: (*_DTYPES, *_CODED_DTYPES)}
_FILTERS = ("none", "delta-rows", "med")
_COMPRESSIONS = ("none", "deflate", "rans")
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


@dataclass(frozen=True)
class _Section:
    name: str
    fields: dict[str, Any]
    payload: bytes


def _aligned(n: int) -> int:
    return n + (-n % ALIGNMENT)


def _planes(shape: tuple[int, ...]) -> int:
    """Number of (H, W) planes: the product of every axis but the last two."""
    return math.prod(shape[:-2])


def encode(
    embedding: np.ndarray, *, model_key: str, dtype: str = DEFAULT_DTYPE, compression: str | None = None
) -> bytes:
    """(1, 256, 64, 64) float32 embedding -> version-3 blob in `dtype` (rans, uint8, float16 or float32).

    compression: None is each dtype's usual choice (rans for rans, deflate for uint8, none for floats);
    "none" or "deflate" force one (not for rans, which is its own compression).
    """
    if dtype not in _VERSION_DTYPES[VERSION]:
        raise ValueError(f"unsupported embedding dtype {dtype!r}")
    if compression is not None and compression not in (("rans",) if dtype in _CODED_DTYPES else ("none", "deflate")):
        raise ValueError(f"compression {compression!r} does not apply to {dtype}")
    array = np.ascontiguousarray(embedding, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError("the embedding has non-finite values")
    if dtype not in _FLOAT_DTYPES and array.ndim < 2:
        raise ValueError("a quantised embedding needs at least two axes (rows and columns)")
    if dtype == "rans":
        return _encode_rans(array, model_key)
    sections: list[_Section] = []
    if dtype in _QUANTISED_DTYPES:
        scales, minimums, q = _quantise(array)
        pairs = scales.astype("<f4").tobytes() + minimums.astype("<f4").tobytes()
        sections.append(_Section("scales", {"count": len(scales)}, pairs))
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
    fields = {"length": len(data), "filter": data_filter, "compression": compression}
    sections.append(_Section("data", fields, data))
    return _blob({"model": model_key, "shape": list(array.shape), "dtype": dtype}, sections)


def _blob(meta: dict[str, Any], sections: list[_Section]) -> bytes:
    """Prefix, JSON header, padding, then each section at a 16-byte aligned offset its header entry names."""
    body = b""
    for section in sections:
        body += b"\0" * (_aligned(len(body)) - len(body))
        meta[section.name] = {"offset": len(body), **section.fields}
        body += section.payload
    header = json.dumps(meta, separators=(",", ":")).encode()
    prefix = _PREFIX.pack(MAGIC, VERSION, len(header)) + header
    return prefix + b"\0" * (-len(prefix) % ALIGNMENT) + body


def _encode_rans(array: np.ndarray, model_key: str) -> bytes:
    """Quantise with per-plane steps, code losslessly; coarser steps while the blob is over budget."""
    planes = array.reshape(_planes(array.shape), *array.shape[-2:]).astype(np.float64)
    weights = _channel_weights(model_key, planes)
    budget = RANS_BYTES_PER_VALUE * array.size
    step = RANS_STEP
    for _ in range(RANS_CODING_ATTEMPTS):
        blob, data_length = _rans_blob(model_key, array.shape, (step / weights).astype(np.float32), planes)
        excess = len(blob) - budget
        # Coarser steps shrink the data only: a tiny tensor whose tables alone exceed the budget keeps its steps.
        if excess <= 0 or len(blob) - data_length >= budget:
            break
        # Each doubling of the step saves about one bit per value; aim a little below the budget.
        step *= 2 ** (8 * excess / array.size + 0.002)
    return blob


def _rans_blob(model_key: str, shape: tuple[int, ...], steps: np.ndarray, planes: np.ndarray) -> tuple[bytes, int]:
    """The blob and the length of its data section."""
    # Round to nearest against the float32 steps actually stored; a step that underflowed to 0 (a plane
    # weighted beyond float32's range) stores the plane as zeros rather than dividing by zero.
    safe = np.where(steps > 0, steps, 1).astype(np.float64)
    coded = embedding_rans.encode_levels(np.rint(planes / safe[:, None, None]).astype(np.int64))
    contexts, symbols = coded.frequencies.shape
    sections = [
        _Section("steps", {"count": len(steps)}, steps.astype("<f4").tobytes()),
        _Section("tables", {"contexts": contexts, "symbols": symbols}, coded.frequencies.astype("<u2").tobytes()),
        _Section(
            "data",
            {"length": coded.words.nbytes, "filter": "med", "compression": "rans", "lane_width": coded.lane_width},
            coded.words.astype("<u2").tobytes(),
        ),
    ]
    meta = {"model": model_key, "shape": list(shape), "dtype": "rans", "contexts": coded.thresholds.tolist()}
    return _blob(meta, sections), coded.words.nbytes


@cache
def _measured_weights() -> dict[str, np.ndarray]:
    with CHANNEL_WEIGHTS.open() as handle:
        return {key: np.asarray(entry["weights"], dtype=np.float64) for key, entry in json.load(handle).items()}


def _channel_weights(model_key: str, planes: np.ndarray) -> np.ndarray:
    """Per-plane weights, geometric mean 1: the model's measured ones, else 1 / (max - min) of each plane."""
    weights = _measured_weights().get(model_key)
    if weights is None or len(weights) != len(planes):
        spread = planes.max(axis=(1, 2)) - planes.min(axis=(1, 2))
        weights = 1 / np.where(spread > 0, spread, 1)
    return weights / np.exp(np.log(weights).mean())


def decode(blob: bytes) -> tuple[EmbeddingHeader, np.ndarray]:
    """Blob (format version 1, 2 or 3) -> (header, float32 array of header.shape)."""
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
    if any(n <= 0 for n in shape) or dtype not in _VERSION_DTYPES[version]:
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
        if data_filter != "none" or compression == "rans":
            raise InvalidEmbedding(f"filter {data_filter!r} or compression {compression!r} does not apply to {dtype}")
        return header, _float_data(body, offset, length, compression, dtype, count).reshape(shape)
    if len(shape) < 2:
        raise InvalidEmbedding("a quantised embedding needs at least two axes")
    if dtype == "rans":
        if (data_filter, compression) != ("med", "rans"):
            raise InvalidEmbedding("a rans embedding is MED-filtered and rANS-coded")
        return header, _rans_data(meta, body, offset, length, shape)
    if data_filter == "med" or compression == "rans":
        raise InvalidEmbedding(f"filter {data_filter!r} or compression {compression!r} does not apply to {dtype}")
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


def _rans_data(meta: dict[str, Any], body: memoryview, offset: int, length: int, shape: tuple[int, ...]) -> np.ndarray:
    planes, height, width = _planes(shape), shape[-2], shape[-1]
    try:
        steps_offset, steps_count = int(meta["steps"]["offset"]), int(meta["steps"]["count"])
        tables = meta["tables"]
        tables_offset, contexts, symbols = int(tables["offset"]), int(tables["contexts"]), int(tables["symbols"])
        thresholds = np.array([int(t) for t in meta["contexts"]], dtype=np.int64)
        lane_width = int(meta["data"]["lane_width"])
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidEmbedding(f"bad embedding header: {error}") from error
    if steps_count != planes or steps_offset < 0 or steps_offset + 4 * planes > len(body):
        raise InvalidEmbedding("bad embedding steps section")
    if not 0 < contexts <= embedding_rans.MAX_CONTEXTS or not 0 < symbols <= embedding_rans.MAX_TOKENS:
        raise InvalidEmbedding("bad embedding tables section")
    if tables_offset < 0 or tables_offset + 2 * contexts * symbols > len(body) or length % 2 or lane_width <= 0:
        raise InvalidEmbedding("bad embedding tables or data section")
    steps = np.frombuffer(body, dtype="<f4", count=planes, offset=steps_offset).astype(np.float64)
    frequencies = np.frombuffer(body, dtype="<u2", count=contexts * symbols, offset=tables_offset)
    words = np.frombuffer(body, dtype="<u2", count=length // 2, offset=offset)
    coded = embedding_rans.CodedLevels(thresholds, frequencies.reshape(contexts, symbols), words, lane_width)
    try:
        q = embedding_rans.decode_levels(coded, (planes, height, width))
    except embedding_rans.CorruptStream as error:
        raise InvalidEmbedding(f"embedding data does not decode: {error}") from error
    return (steps[:, None] * q.reshape(planes, -1)).astype(np.float32).reshape(shape)
