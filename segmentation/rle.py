"""COCO compressed RLE, checked before it reaches pycocotools.

pycocotools decodes a counts string into a buffer of h*w bytes without bounds checks, so counts that add
up to more than h*w would write past it. `parse_counts` reads the string in Python first and refuses
anything that does not describe exactly h*w pixels.
"""

from typing import TypedDict

import numpy as np
from pycocotools import mask as coco_mask


class InvalidRLE(ValueError):
    pass


class RLE(TypedDict):
    size: list[int]
    counts: str


def parse_counts(counts: str) -> list[int]:
    """Run lengths from COCO's string form (6-bit chars, zigzag deltas against the run two back)."""
    runs: list[int] = []
    pos = 0
    data = counts.encode("ascii", errors="strict")
    while pos < len(data):
        value = 0
        shift = 0
        more = True
        while more:
            if pos >= len(data):
                raise InvalidRLE("RLE counts end in the middle of a number")
            chunk = data[pos] - 48
            if not 0 <= chunk < 64:
                raise InvalidRLE("RLE counts hold a character outside COCO's alphabet")
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            pos += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
            if shift > 60:
                raise InvalidRLE("RLE count too large")
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def validate(rle: object, *, height: int, width: int) -> RLE:
    """Check an RLE dict from a client against the image size; returns it normalised."""
    if not isinstance(rle, dict):
        raise InvalidRLE("rle must be an object {size: [h, w], counts: string}")
    size, counts = rle.get("size"), rle.get("counts")
    if size != [height, width]:
        raise InvalidRLE(f"rle size {size} does not match the image size [{height}, {width}]")
    if not isinstance(counts, str):
        raise InvalidRLE("rle counts must be COCO's compressed string")
    try:
        runs = parse_counts(counts)
    except UnicodeEncodeError as error:
        raise InvalidRLE("RLE counts hold a non-ASCII character") from error
    if any(run < 0 for run in runs):
        raise InvalidRLE("RLE holds a negative run length")
    if sum(runs) != height * width:
        raise InvalidRLE(f"RLE covers {sum(runs)} pixels, the image has {height * width}")
    return {"size": [height, width], "counts": counts}


def encode(mask: np.ndarray) -> RLE:
    """(H, W) bool mask -> COCO compressed RLE with a str counts."""
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(encoded["size"][0]), int(encoded["size"][1])], "counts": encoded["counts"].decode("ascii")}


def decode(rle: RLE) -> np.ndarray:
    """COCO compressed RLE -> (H, W) bool mask. Only call on an RLE that went through `validate`."""
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return coco_mask.decode(as_bytes).astype(bool)


def area_and_bbox(rle: RLE) -> tuple[int, list[float]]:
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return int(coco_mask.area(as_bytes)), [float(v) for v in coco_mask.toBbox(as_bytes)]
