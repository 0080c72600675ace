import io
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from rest_framework.test import APIClient

from segmentation.models import Image, Project
from tests.conftest import body


def upload(client: APIClient, project: Project, *files: tuple[str, bytes]) -> Any:
    payload = {"file": [SimpleUploadedFile(name, data) for name, data in files]}
    return client.post(f"/api/v1/projects/{project.id}/images/", payload, format="multipart")


def stored_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_it_uploads_many_images_at_once(
    as_alice: APIClient, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    response = upload(
        as_alice, project, ("a.png", make_image_bytes("PNG")), ("b.jpg", make_image_bytes("JPEG", size=(30, 20)))
    )
    assert response.status_code == 201
    body = response.json()
    assert [(i["name"], i["width"], i["height"], i["status"]) for i in body] == [
        ("a.png", 64, 48, "queued"),
        ("b.jpg", 30, 20, "queued"),
    ]
    assert body[0]["model"] == "mobile_sam"
    assert Image.objects.count() == 2
    assert len(stored_files()) == 4  # each image and its thumbnail


def test_it_refuses_a_non_image_by_content(as_alice: APIClient, project: Project) -> None:
    response = upload(as_alice, project, ("evil.png", b"#!/bin/sh\nrm -rf /\n" * 10))
    assert response.status_code == 415
    assert "evil.png" in response.json()["error"]
    assert Image.objects.count() == 0
    assert stored_files() == []


def test_a_bad_file_in_a_batch_leaves_nothing_half_saved(
    as_alice: APIClient, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    response = upload(as_alice, project, ("good.png", make_image_bytes("PNG")), ("bad.png", b"not an image"))
    assert response.status_code == 415
    assert Image.objects.count() == 0
    assert stored_files() == []


def test_it_refuses_a_truncated_file(
    as_alice: APIClient, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    data = make_image_bytes("PNG", size=(200, 200))
    response = upload(as_alice, project, ("cut.png", data[: len(data) // 2]))
    assert response.status_code == 400
    assert "truncated" in response.json()["error"]
    assert Image.objects.count() == 0


def test_it_refuses_a_decompression_bomb_before_decoding(as_alice: APIClient, project: Project) -> None:
    # A PNG header that declares 100,000 x 100,000 pixels: refused from the header alone.
    def chunk(kind: bytes, data: bytes) -> bytes:
        import zlib

        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )
    response = upload(as_alice, project, ("bomb.png", bomb))
    assert response.status_code == 413
    assert "pixels" in response.json()["error"]


def test_it_refuses_a_file_over_the_byte_limit(
    as_alice: APIClient, project: Project, settings: object, make_image_bytes: Callable[..., bytes]
) -> None:
    settings.MAX_UPLOAD_BYTES = 1000  # type: ignore[attr-defined]
    response = upload(as_alice, project, ("big.png", make_image_bytes("PNG", size=(100, 100))))
    assert response.status_code == 413
    assert Image.objects.count() == 0


def test_it_asks_for_a_file(as_alice: APIClient, project: Project) -> None:
    response = as_alice.post(f"/api/v1/projects/{project.id}/images/", {}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()["error"]


def test_it_applies_exif_orientation(as_alice: APIClient, project: Project) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # left half white
    image = PILImage.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=100)
    response = upload(as_alice, project, ("phone.jpg", buffer.getvalue()))
    assert response.status_code == 201
    assert (response.json()[0]["width"], response.json()[0]["height"]) == (20, 40)
    stored = PILImage.open(Image.objects.get().file.path)
    assert stored.size == (20, 40)
    assert np.asarray(stored)[:10].mean() > 200  # the white half is now on top


@pytest.mark.parametrize("mode", ["RGBA", "L", "CMYK"])
def test_it_normalises_colour_modes_to_rgb(
    as_alice: APIClient, project: Project, make_image_bytes: Callable[..., bytes], mode: str
) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    response = upload(as_alice, project, (f"x.{fmt.lower()}", make_image_bytes(fmt, mode=mode)))
    assert response.status_code == 201
    assert PILImage.open(Image.objects.get().file.path).mode == "RGB"


def test_it_serves_the_image_only_to_members(
    as_alice: APIClient, as_bob: APIClient, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    image_id = upload(as_alice, project, ("a.png", make_image_bytes("PNG"))).json()[0]["id"]
    response = as_alice.get(f"/api/v1/images/{image_id}/file")
    assert response.status_code == 200
    assert PILImage.open(io.BytesIO(body(response))).size == (64, 48)
    assert as_bob.get(f"/api/v1/images/{image_id}/file").status_code == 404
    assert as_bob.get(f"/api/v1/images/{image_id}/").status_code == 404
    assert as_bob.get(f"/api/v1/images/{image_id}/embedding").status_code == 404


def test_a_viewer_cannot_upload(as_vera: APIClient, project: Project, make_image_bytes: Callable[..., bytes]) -> None:
    response = upload(as_vera, project, ("a.png", make_image_bytes("PNG")))
    assert response.status_code == 403
    assert Image.objects.count() == 0


def test_the_embedding_is_409_until_ready(
    as_alice: APIClient, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    image_id = upload(as_alice, project, ("a.png", make_image_bytes("PNG"))).json()[0]["id"]
    response = as_alice.get(f"/api/v1/images/{image_id}/embedding")
    assert response.status_code == 409
    assert "not ready" in response.json()["error"]


def test_a_duplicate_reuses_the_stored_image(
    as_alice: APIClient, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    data = make_image_bytes("PNG")
    first = upload(as_alice, project, ("a.png", data)).json()[0]
    again = upload(as_alice, project, ("copy-of-a.png", data), ("b.png", make_image_bytes("PNG", size=(10, 10))))
    assert again.status_code == 201
    assert again.json()[0]["id"] == first["id"]
    assert Image.objects.count() == 2
    assert len(stored_files()) == 4  # two images, two thumbnails


def test_a_failed_batch_never_deletes_an_existing_duplicate(
    as_alice: APIClient, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    data = make_image_bytes("PNG")
    upload(as_alice, project, ("a.png", data))
    response = upload(as_alice, project, ("a-again.png", data), ("bad.png", b"nope"))
    assert response.status_code == 415
    assert Image.objects.count() == 1
    assert len(stored_files()) == 2


def test_it_serves_a_thumbnail(as_alice: APIClient, project: Project, make_image_bytes: Callable[..., bytes]) -> None:
    image = upload(as_alice, project, ("a.png", make_image_bytes("PNG", size=(800, 400)))).json()[0]
    response = as_alice.get(image["thumbnail_url"])
    assert response.status_code == 200
    assert PILImage.open(io.BytesIO(body(response))).size == (320, 160)


def test_it_accepts_heic(as_alice: APIClient, project: Project) -> None:
    import pillow_heif

    pixels = np.random.default_rng(1).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    heif = pillow_heif.from_bytes(mode="RGB", size=(48, 32), data=pixels.tobytes())
    buffer = io.BytesIO()
    heif.save(buffer, quality=90)
    response = upload(as_alice, project, ("phone.heic", buffer.getvalue()))
    assert response.status_code == 201, response.json()
    assert (response.json()[0]["width"], response.json()[0]["height"]) == (48, 32)


@pytest.mark.parametrize(("fmt", "mode"), [("WEBP", "RGB"), ("TIFF", "RGB"), ("BMP", "RGB"), ("GIF", "P")])
def test_it_accepts_the_allowed_formats(as_alice: APIClient, project: Project, fmt: str, mode: str) -> None:
    image = PILImage.new("RGB", (20, 10), (200, 30, 40)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    response = upload(as_alice, project, (f"x.{fmt.lower()}", buffer.getvalue()))
    assert response.status_code == 201, response.json()
    stored = np.asarray(PILImage.open(Image.objects.get().file.path))
    assert stored.shape == (10, 20, 3)


def test_it_normalises_16_bit_and_palette_transparency(as_alice: APIClient, project: Project) -> None:
    deep = PILImage.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    buffer = io.BytesIO()
    deep.save(buffer, format="PNG")
    assert upload(as_alice, project, ("deep.png", buffer.getvalue())).status_code == 201
    assert np.asarray(PILImage.open(Image.objects.get().file.path)).min() == 255

    palette = PILImage.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0] * 256)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)
    assert upload(as_alice, project, ("clear.png", buffer.getvalue())).status_code == 201
    stored = np.asarray(PILImage.open(Image.objects.order_by("-id").first().file.path))  # type: ignore[union-attr]
    assert stored.min() == 255  # fully transparent shows as white, as a viewer shows it


def test_served_images_carry_no_metadata(as_alice: APIClient, project: Project) -> None:
    image = PILImage.new("RGB", (16, 16), (10, 20, 30))
    exif = image.getexif()
    exif[0x010F] = "SecretCam"  # camera make
    exif[0x0131] = "SecretSoftware"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    image_id = upload(as_alice, project, ("gps.jpg", buffer.getvalue())).json()[0]["id"]
    served = body(as_alice.get(f"/api/v1/images/{image_id}/file"))
    assert b"SecretCam" not in served
    assert "exif" not in PILImage.open(io.BytesIO(served)).info
