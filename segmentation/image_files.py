"""Uploaded bytes -> pixels we can trust, or a clear refusal.

Decided by content, never by the file name or Content-Type. The stored file is a PNG of exactly the
pixels the user sees (EXIF orientation applied, colour mode normalised to 8-bit RGB, metadata dropped),
so the embedding, the masks and the browser all work on the same pixels.
"""

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

pillow_heif.register_heif_opener()

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "HEIF")
THUMBNAIL_SIDE = 320


class RejectedImage(ValueError):
    """An upload we refuse; `status` is the HTTP status that says why (400, 413 or 415)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PreparedImage:
    png: bytes
    thumbnail_jpeg: bytes
    width: int
    height: int
    sha256: str


def prepare_image(data: bytes, *, max_bytes: int, max_pixels: int) -> PreparedImage:
    if len(data) == 0:
        raise RejectedImage("the file is empty")
    if len(data) > max_bytes:
        raise RejectedImage(f"the file is larger than {max_bytes // (1024 * 1024)} MiB", status=413)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise RejectedImage(f"the image declares too many pixels ({error})", status=413) from error
    except UnidentifiedImageError as error:
        raise RejectedImage(f"not an image we can read (allowed: {', '.join(ALLOWED_FORMATS)})", status=415) from error
    if image.format not in ALLOWED_FORMATS:
        raise RejectedImage(
            f"{image.format} images are not supported (allowed: {', '.join(ALLOWED_FORMATS)})", status=415
        )
    # Check the declared size before decoding a single pixel: a decompression bomb is refused here.
    width, height = image.size
    if width * height > max_pixels:
        raise RejectedImage(f"the image has {width}x{height} pixels, more than {max_pixels:,} allowed", status=413)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise RejectedImage(f"the image file is truncated or corrupt ({error})") from error
    # GIF: the first frame (Pillow opens at frame 0); HEIC: the primary image.
    rgb = to_rgb(ImageOps.exif_transpose(image))
    png = io.BytesIO()
    rgb.save(png, format="PNG", compress_level=3)
    return PreparedImage(
        png=png.getvalue(),
        thumbnail_jpeg=thumbnail(rgb),
        width=rgb.width,
        height=rgb.height,
        sha256=content_hash(data),
    )


def content_hash(data: bytes) -> str:
    """What makes two uploads "the same image" in a project."""
    return hashlib.sha256(data).hexdigest()


def thumbnail(rgb: Image.Image) -> bytes:
    """A small JPEG for the image grid (longest side THUMBNAIL_SIDE)."""
    small = rgb.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue()


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB as a viewer shows it (transparency over white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(pixels / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(data: bytes) -> np.ndarray:
    """A stored image file -> (H, W, 3) uint8."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
