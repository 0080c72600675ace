"""The embedding blob shipped to the browser: a small versioned header, then the tensor.

Layout (little-endian):
    8 bytes   magic b"SAMEMB" + uint16 format version
    4 bytes   uint32 length of the JSON header
    n bytes   JSON header: {"model": key, "shape": [1, 256, 64, 64], "dtype": "float16"}
    padding   zero bytes up to a multiple of 16, so the data can be viewed in place as a typed array
    data      the tensor in C order, in `dtype`

The model key travels with the data so a browser never pairs an embedding with another model's decoder.
"""

import json
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"SAMEMB"
VERSION = 1
CONTENT_TYPE = "application/x-sam-embedding"
_SUPPORTED_DTYPES = {"float16": np.float16, "float32": np.float32}


class InvalidEmbedding(ValueError):
    pass


@dataclass(frozen=True)
class EmbeddingHeader:
    model: str
    shape: tuple[int, ...]
    dtype: str


def encode(embedding: np.ndarray, *, model_key: str, dtype: str = "float16") -> bytes:
    """(1, 256, 64, 64) float32 embedding -> blob."""
    if dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"unsupported embedding dtype {dtype!r}")
    header = json.dumps({"model": model_key, "shape": list(embedding.shape), "dtype": dtype}).encode()
    prefix = MAGIC + struct.pack("<HI", VERSION, len(header)) + header
    padding = b"\0" * (-len(prefix) % 16)
    data = np.ascontiguousarray(embedding, dtype=_SUPPORTED_DTYPES[dtype]).astype("<" + np.dtype(dtype).str[1:])
    return prefix + padding + data.tobytes()


def decode(blob: bytes) -> tuple[EmbeddingHeader, np.ndarray]:
    """Blob -> (header, float32 array of header.shape)."""
    if len(blob) < 12 or blob[:6] != MAGIC:
        raise InvalidEmbedding("not an embedding blob")
    version, header_len = struct.unpack("<HI", blob[6:12])
    if version != VERSION:
        raise InvalidEmbedding(f"embedding format version {version} is not supported")
    meta = json.loads(blob[12 : 12 + header_len])
    header = EmbeddingHeader(model=meta["model"], shape=tuple(meta["shape"]), dtype=meta["dtype"])
    offset = 12 + header_len
    offset += -offset % 16
    dtype = np.dtype(_SUPPORTED_DTYPES[header.dtype]).newbyteorder("<")
    count = int(np.prod(header.shape))
    data = np.frombuffer(blob, dtype=dtype, count=count, offset=offset)
    return header, data.reshape(header.shape).astype(np.float32)
