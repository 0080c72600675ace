from collections.abc import Callable

import numpy as np
import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from segmentation import rle, services
from segmentation.models import Image, Mask, Project


@pytest.fixture
def image(alice: User, project: Project, make_image_bytes: Callable[..., bytes]) -> Image:
    image, _ = services.image_create(
        project=project, user=alice, data=make_image_bytes("PNG", size=(40, 30)), filename="a.png"
    )
    return image


def square_rle(height: int = 30, width: int = 40) -> dict:
    mask = np.zeros((height, width), dtype=bool)
    mask[5:15, 10:30] = True
    return dict(rle.encode(mask))


def test_it_saves_a_mask_with_its_prompts(as_alice: APIClient, image: Image) -> None:
    body = {"label": "cat", "rle": square_rle(), "points": [[20, 10, 1], [3, 3, 0]], "box": None, "score": 0.9}
    response = as_alice.post(f"/api/v1/images/{image.id}/masks/", body, format="json")
    assert response.status_code == 201, response.json()
    saved = response.json()
    assert saved["label"] == "cat"
    assert saved["area"] == 200
    assert saved["bbox"] == [10.0, 5.0, 20.0, 10.0]
    assert saved["points"] == [[20.0, 10.0, 1.0], [3.0, 3.0, 0.0]]
    assert as_alice.get(f"/api/v1/images/{image.id}/masks/").json()[0]["rle"] == body["rle"]


@pytest.mark.parametrize(
    ("rle_body", "message"),
    [
        ({"size": [31, 40], "counts": "x"}, "does not match"),
        ({"size": [30, 40], "counts": "0"}, "covers"),
        ({"size": [30, 40], "counts": "\x7f\x7f"}, "alphabet"),
        ({"size": [30, 40], "counts": "ÿ"}, "non-ASCII"),
        ({"size": [30, 40], "counts": "o"}, "middle"),
        ({"size": [30, 40]}, "counts"),
    ],
)
def test_it_refuses_a_mask_that_does_not_fit(as_alice: APIClient, image: Image, rle_body: dict, message: str) -> None:
    response = as_alice.post(f"/api/v1/images/{image.id}/masks/", {"label": "cat", "rle": rle_body}, format="json")
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not Mask.objects.exists()


def test_an_rle_covering_too_many_pixels_never_reaches_pycocotools(as_alice: APIClient, image: Image) -> None:
    # Counts that add up to far more than 30x40 would overflow pycocotools' buffer.
    huge = {"size": [30, 40], "counts": rle.encode(np.ones((3000, 4000), dtype=bool))["counts"]}
    response = as_alice.post(f"/api/v1/images/{image.id}/masks/", {"label": "cat", "rle": huge}, format="json")
    assert response.status_code == 400


def test_it_refuses_prompts_outside_the_image(as_alice: APIClient, image: Image) -> None:
    body = {"label": "cat", "rle": square_rle(), "points": [[400, 10, 1]]}
    response = as_alice.post(f"/api/v1/images/{image.id}/masks/", body, format="json")
    assert response.status_code == 400
    assert "outside" in response.json()["error"]


def test_relabel_and_delete(as_alice: APIClient, as_vera: APIClient, as_bob: APIClient, image: Image) -> None:
    mask_id = as_alice.post(
        f"/api/v1/images/{image.id}/masks/", {"label": "cat", "rle": square_rle()}, format="json"
    ).json()["id"]
    assert as_vera.patch(f"/api/v1/masks/{mask_id}/", {"label": "dog"}, format="json").status_code == 403
    assert as_bob.patch(f"/api/v1/masks/{mask_id}/", {"label": "dog"}, format="json").status_code == 404
    assert as_alice.patch(f"/api/v1/masks/{mask_id}/", {"label": "dog"}, format="json").json()["label"] == "dog"
    assert as_vera.delete(f"/api/v1/masks/{mask_id}/").status_code == 403
    assert as_alice.delete(f"/api/v1/masks/{mask_id}/").status_code == 204
    assert not Mask.objects.exists()


def test_a_viewer_cannot_save(as_vera: APIClient, image: Image) -> None:
    response = as_vera.post(f"/api/v1/images/{image.id}/masks/", {"label": "cat", "rle": square_rle()}, format="json")
    assert response.status_code == 403


def test_the_mask_downloads_as_png(as_alice: APIClient, image: Image) -> None:
    import io

    from PIL import Image as PILImage

    mask_id = as_alice.post(
        f"/api/v1/images/{image.id}/masks/", {"label": "cat", "rle": square_rle()}, format="json"
    ).json()["id"]
    response = as_alice.get(f"/api/v1/masks/{mask_id}/png")
    assert response.status_code == 200
    png = np.asarray(PILImage.open(io.BytesIO(response.content)))
    assert png.shape == (30, 40)
    assert (png == 255).sum() == 200


def test_labels_are_created_on_the_fly_with_colours(as_alice: APIClient, as_vera: APIClient, image: Image) -> None:
    url = f"/api/v1/projects/{image.project_id}/labels/"
    assert as_alice.get(url).json() == []
    as_alice.post(f"/api/v1/images/{image.id}/masks/", {"label": "cat", "rle": square_rle()}, format="json")
    created = as_alice.post(url, {"name": "dog", "color": "#00FF00"}, format="json")
    assert created.status_code == 201
    labels = as_vera.get(url).json()
    assert [(label["name"], label["color"]) for label in labels] == [("cat", "#2563eb"), ("dog", "#00ff00")]
    assert as_alice.post(url, {"name": "dog", "color": "green"}, format="json").status_code == 400
    assert as_vera.post(url, {"name": "bird"}, format="json").status_code == 403


def test_it_keeps_the_chosen_candidate(as_alice: APIClient, image: Image) -> None:
    url = f"/api/v1/images/{image.id}/masks/"
    body = {"label": "cat", "rle": square_rle(), "points": [[20, 10, 1], [3, 3, 0]], "candidate": 2}
    saved = as_alice.post(url, body, format="json").json()
    assert saved["candidate"] == 2
    assert Mask.objects.get(pk=saved["id"]).candidate == 2
    assert as_alice.get(f"/api/v1/masks/{saved['id']}/").json()["candidate"] == 2
    # Without one, the best candidate (what a box or an API client without Tab gets).
    plain = as_alice.post(url, {"label": "cat", "rle": square_rle(), "box": [1, 1, 30, 20]}, format="json").json()
    assert plain["candidate"] == 0


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ({"points": [[20, 10, 1]], "candidate": 3}, "must be 0 (the best), 1 or 2"),
        ({"points": [[20, 10, 1]], "candidate": -1}, "must be 0 (the best), 1 or 2"),
        ({"points": [[20, 10, 1]], "candidate": "best"}, "candidate"),
        ({"points": [[20, 10, 1]], "box": [1, 1, 30, 20], "candidate": 1}, "starts with a box"),
        ({"points": [], "box": [1, 1, 30, 20], "candidate": 2}, "starts with a box"),
    ],
)
def test_it_refuses_a_candidate_there_is_no_choice_of(
    as_alice: APIClient, image: Image, prompts: dict, message: str
) -> None:
    body = {"label": "cat", "rle": square_rle(), **prompts}
    response = as_alice.post(f"/api/v1/images/{image.id}/masks/", body, format="json")
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not Mask.objects.exists()
