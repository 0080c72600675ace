import io
import json
import zipfile
from collections.abc import Callable

import numpy as np
import pytest
from django.contrib.auth.models import User
from PIL import Image as PILImage
from rest_framework.test import APIClient

from segmentation import rle, services
from segmentation.models import Image, Project
from tests.conftest import body


@pytest.fixture
def annotated(alice: User, project: Project, make_image_bytes: Callable[..., bytes]) -> Image:
    image, _ = services.image_create(
        project=project, user=alice, data=make_image_bytes("PNG", size=(40, 30)), filename="cat photo.png"
    )
    for label, (y0, y1, x0, x1), candidate in [("cat", (5, 15, 10, 30), 0), ("dog", (20, 28, 2, 12), 1)]:
        mask = np.zeros((30, 40), dtype=bool)
        mask[y0:y1, x0:x1] = True
        services.mask_save(
            image=image,
            user=alice,
            label=label,
            rle_data=dict(rle.encode(mask)),
            points=[[x0 + 1, y0 + 1, 1]],
            box=None,
            score=0.5,
            candidate=candidate,
        )
    return image


def download(client: APIClient, project: Project, fmt: str) -> bytes:
    response = client.get(f"/api/v1/projects/{project.id}/export?format={fmt}")
    assert response.status_code == 200
    return body(response)


def test_coco_export_is_valid_coco_with_rle(as_vera: APIClient, project: Project, annotated: Image) -> None:
    from pycocotools.coco import COCO

    data = json.loads(download(as_vera, project, "coco"))
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    assert [c["name"] for c in data["categories"]] == ["cat", "dog"]
    assert data["images"] == [{"id": annotated.id, "file_name": "cat photo.png", "width": 40, "height": 30}]
    masks = [coco.annToMask(a) for a in data["annotations"]]
    assert [int(m.sum()) for m in masks] == [200, 80]
    # With the prompts and the first click's chosen candidate, each mask can be recomputed (replay).
    assert [(a["points"], a["box"], a["candidate"]) for a in data["annotations"]] == [
        ([[11, 6, 1]], None, 0),
        ([[3, 21, 1]], None, 1),
    ]


def test_png_export_has_one_binary_png_per_mask(as_alice: APIClient, project: Project, annotated: Image) -> None:
    archive = zipfile.ZipFile(io.BytesIO(download(as_alice, project, "png")))
    index = json.loads(archive.read("masks.json"))
    assert [entry["label"] for entry in index] == ["cat", "dog"]
    first = np.asarray(PILImage.open(io.BytesIO(archive.read(index[0]["file"]))))
    assert first.shape == (30, 40)
    assert int((first == 255).sum()) == 200


def test_yolo_export_has_normalised_polygons(as_alice: APIClient, project: Project, annotated: Image) -> None:
    archive = zipfile.ZipFile(io.BytesIO(download(as_alice, project, "yolo")))
    assert "names:" in archive.read("data.yaml").decode()
    labels = archive.read(f"labels/cat-photo_{annotated.id}.txt").decode().strip().splitlines()
    assert [line.split()[0] for line in labels] == ["0", "1"]
    coords = np.array(labels[0].split()[1:], dtype=float).reshape(-1, 2)
    assert coords[:, 0].min() == pytest.approx(10 / 40, abs=1e-6)
    assert coords[:, 1].min() == pytest.approx(5 / 30, abs=1e-6)


def test_it_refuses_an_unknown_format(as_alice: APIClient, project: Project) -> None:
    response = as_alice.get(f"/api/v1/projects/{project.id}/export?format=xml")
    assert response.status_code == 400
    assert "coco" in response.json()["error"]
