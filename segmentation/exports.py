"""Downloads: one mask as PNG; a whole project as COCO JSON (RLE), PNG masks or YOLO segmentation.

Project exports are streamed, one image at a time, so a project of thousands of images never sits in
memory whole.
"""

import io
import json
import re
import zipfile
from collections.abc import Iterator

import cv2
import numpy as np
from PIL import Image as PILImage

from . import rle
from .models import Image, Mask, Project

FORMATS = ("coco", "png", "yolo")


def mask_array(mask: Mask) -> np.ndarray:
    return rle.decode({"size": [mask.image.height, mask.image.width], "counts": mask.rle_counts})


def mask_png(mask: Mask) -> bytes:
    """Binary PNG at the image's size: 255 inside the object, 0 outside."""
    buffer = io.BytesIO()
    PILImage.fromarray(mask_array(mask).astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_filename(mask: Mask) -> str:
    return f"{_stem(mask.image.original_name)}_{mask.id}_{_slug(mask.label)}.png"


def export_project(project: Project, fmt: str) -> tuple[str, str, Iterator[bytes]]:
    """-> (content type, download file name, chunks)."""
    base = _slug(project.name) or f"project-{project.id}"
    if fmt == "coco":
        return "application/json", f"{base}-coco.json", _coco_chunks(project)
    if fmt == "png":
        return "application/zip", f"{base}-png-masks.zip", _zip_chunks(_png_members(project))
    if fmt == "yolo":
        return "application/zip", f"{base}-yolo.zip", _zip_chunks(_yolo_members(project))
    raise ValueError(f"unknown export format {fmt!r}")


def _labels(project: Project) -> list[str]:
    return sorted(set(Mask.objects.filter(image__project=project).values_list("label", flat=True)))


def _images(project: Project) -> Iterator[Image]:
    yield from Image.objects.filter(project=project).order_by("id").prefetch_related("masks").iterator(chunk_size=100)


def _coco_chunks(project: Project) -> Iterator[bytes]:
    labels = _labels(project)
    category_ids = {label: index + 1 for index, label in enumerate(labels)}
    categories = [{"id": category_ids[label], "name": label, "supercategory": ""} for label in labels]
    yield (
        '{"info": '
        + json.dumps({"description": project.name, "version": "1.0"})
        + ', "licenses": [], "categories": '
        + json.dumps(categories)
        + ', "images": ['
    ).encode()
    first = True
    annotations: list[dict[str, object]] = []
    for image in _images(project):
        entry = {"id": image.id, "file_name": image.original_name, "width": image.width, "height": image.height}
        yield ((", " if not first else "") + json.dumps(entry)).encode()
        first = False
        for mask in image.masks.all():
            annotations.append(
                {
                    "id": mask.id,
                    "image_id": image.id,
                    "category_id": category_ids[mask.label],
                    "segmentation": {"size": [image.height, image.width], "counts": mask.rle_counts},
                    "area": mask.area,
                    "bbox": mask.bbox,
                    "iscrowd": 0,
                    "score": mask.score,
                    "points": mask.points,
                    "box": mask.box,
                    "candidate": mask.candidate,
                }
            )
    yield b'], "annotations": ['
    for index, annotation in enumerate(annotations):
        yield ((", " if index else "") + json.dumps(annotation)).encode()
    yield b"]}"


def _png_members(project: Project) -> Iterator[tuple[str, bytes]]:
    index = []
    for image in _images(project):
        for mask in image.masks.all():
            mask.image = image
            name = f"{_stem(image.original_name)}_{image.id}/{mask.id}_{_slug(mask.label)}.png"
            index.append(
                {
                    "file": name,
                    "image": image.original_name,
                    "image_id": image.id,
                    "mask_id": mask.id,
                    "label": mask.label,
                }
            )
            yield name, mask_png(mask)
    yield "masks.json", json.dumps(index, indent=1).encode()


def _yolo_members(project: Project) -> Iterator[tuple[str, bytes]]:
    labels = _labels(project)
    class_ids = {label: index for index, label in enumerate(labels)}
    for image in _images(project):
        lines = []
        for mask in image.masks.all():
            mask.image = image
            for polygon in mask_polygons(mask_array(mask)):
                coords = " ".join(f"{x / image.width:.6f} {y / image.height:.6f}" for x, y in polygon)
                lines.append(f"{class_ids[mask.label]} {coords}")
        yield f"labels/{_stem(image.original_name)}_{image.id}.txt", ("\n".join(lines) + "\n" if lines else "").encode()
    names = "\n".join(f"  {index}: {json.dumps(label)}" for index, label in enumerate(labels))
    yield "data.yaml", f"path: .\ntrain: images\nval: images\nnames:\n{names}\n".encode()


def mask_polygons(mask: np.ndarray) -> list[list[tuple[float, float]]]:
    """Outer contours of each connected part, as YOLO segmentation wants them (≥ 3 points each)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [[(float(x), float(y)) for x, y in contour[:, 0, :]] for contour in contours if len(contour) >= 3]


class _ChunkSink(io.RawIOBase):
    """A write-only, non-seekable sink: zipfile then writes data descriptors and never seeks back."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.chunks.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def _zip_chunks(members: Iterator[tuple[str, bytes]]) -> Iterator[bytes]:
    sink = _ChunkSink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
        for name, data in members:
            archive.writestr(name, data)
            yield sink.drain()
    yield sink.drain()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80]


def _stem(filename: str) -> str:
    return _slug(filename.rsplit(".", 1)[0]) or "image"
