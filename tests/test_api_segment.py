"""Server-side decoding through the API, checked against the official MobileSAM outputs."""

import json

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from segmentation import rle, services
from segmentation.models import Image, Project
from tests.conftest import FIXTURES, body

MOBILE_SAM = FIXTURES / "mobile_sam"


def official(case_image: str, prompt_name: str) -> tuple[dict, dict]:
    manifest = json.loads((MOBILE_SAM / "manifest.json").read_text())
    case = next(c for c in manifest["cases"] if c["image"] == case_image)
    prompt = next(p for p in case["prompts"] if p["name"] == prompt_name)
    outputs = np.load(MOBILE_SAM / prompt["outputs"])
    masks = np.unpackbits(outputs["masks"], axis=-1, count=case["width"]).astype(bool)
    return prompt, {"masks": masks.reshape(-1, case["height"], case["width"]), "iou": outputs["iou"].reshape(-1)}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture
def astronaut(alice: User, project: Project) -> Image:
    image, _ = services.image_create(
        project=project, user=alice, data=(MOBILE_SAM / "astronaut.png").read_bytes(), filename="astronaut.png"
    )
    services.embedding_compute(image_id=image.id)
    image.refresh_from_db()
    assert image.status == "ready"
    return image


@pytest.mark.parametrize("prompt_name", ["one_point", "pos_neg", "box", "box_point"])
def test_it_segments_like_the_official_predictor(as_vera: APIClient, astronaut: Image, prompt_name: str) -> None:
    prompt, expected = official("astronaut.png", prompt_name)
    points = [[x, y, label] for (x, y), label in zip(prompt["points"] or [], prompt["labels"] or [], strict=True)]
    response = as_vera.post(
        f"/api/v1/images/{astronaut.id}/segment",
        {"points": points, "box": prompt["box"], "multimask": prompt["multimask"]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    masks = response.json()["masks"]
    assert len(masks) == len(expected["iou"])
    # Returned best first: compare with the official candidates in the same order.
    order = np.argsort(-expected["iou"])
    for got, index in zip(masks, order, strict=True):
        assert abs(got["score"] - float(expected["iou"][index])) < 1e-3
        assert iou(rle.decode(got["rle"]), expected["masks"][index]) >= 0.99


def test_it_explains_bad_prompts(as_alice: APIClient, astronaut: Image) -> None:
    url = f"/api/v1/images/{astronaut.id}/segment"
    for prompt in [{}, {"points": [[1, 2]]}, {"points": [[1, 2, 5]]}, {"box": [1, 2, 3]}, {"points": "nope"}]:
        response = as_alice.post(url, prompt, format="json")
        assert response.status_code == 400, prompt
        assert response.json()["error"]


def test_the_embedding_is_served_content_addressed(as_alice: APIClient, astronaut: Image) -> None:
    detail = as_alice.get(f"/api/v1/images/{astronaut.id}/").json()
    assert detail["status"] == "ready"
    url = detail["embedding_url"]
    response = as_alice.get(url)
    assert response.status_code == 200
    assert "immutable" in response["Cache-Control"]
    etag = response["ETag"]
    assert as_alice.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    blob = body(response)
    from segmentation.sam import embedding_codec

    header, tensor = embedding_codec.decode(blob)
    assert header.model == "mobile_sam"
    official_embedding = np.load(MOBILE_SAM / "astronaut.embedding.npz")["embedding"]
    assert np.abs(tensor - official_embedding).max() < 5e-3  # rans (the default): half a step, < 5e-4


def test_replay_starts_from_the_chosen_candidate(as_vera: APIClient, astronaut: Image) -> None:
    url = f"/api/v1/images/{astronaut.id}/segment"
    prompt, _ = official("astronaut.png", "pos_neg")
    points = [[x, y, label] for (x, y), label in zip(prompt["points"], prompt["labels"], strict=True)]
    candidates = as_vera.post(url, {"points": points[:1], "multimask": True}, format="json").json()["masks"]

    def replay(points: list, candidate: int) -> np.ndarray:
        response = as_vera.post(url, {"points": points, "replay": True, "candidate": candidate}, format="json")
        assert response.status_code == 200, response.json()
        return rle.decode(response.json()["masks"][0]["rle"])

    # One click: the chosen candidate itself, in the best-first order `segment` lists them.
    for index, candidate in enumerate(candidates):
        np.testing.assert_array_equal(replay(points[:1], index), rle.decode(candidate["rle"]))
    # A second click refines the chosen candidate, not the best one.
    assert iou(replay(points, 1), replay(points, 0)) < 0.9


def test_it_explains_a_bad_candidate(as_alice: APIClient, astronaut: Image) -> None:
    url = f"/api/v1/images/{astronaut.id}/segment"
    point = [[100, 100, 1]]
    for prompt, message in [
        ({"points": point, "replay": True, "candidate": 3}, "must be 0 (the best), 1 or 2"),
        ({"points": point, "replay": True, "candidate": -1}, "must be 0 (the best), 1 or 2"),
        ({"points": point, "multimask": True, "candidate": 1}, "only applies with replay: true"),
        ({"points": point, "box": [10, 10, 200, 200], "replay": True, "candidate": 1}, "starts with a box"),
    ]:
        response = as_alice.post(url, prompt, format="json")
        assert response.status_code == 400, prompt
        assert message in response.json()["error"], response.json()


def test_the_annotator_asks_for_one_version_of_the_graph_pair(
    alice: User, as_alice: APIClient, astronaut: Image
) -> None:
    browser = Client()
    browser.force_login(alice)
    page = browser.get(f"/images/{astronaut.id}/").content.decode()
    version = page.split('data-graphs-version="')[1].split('"')[0]
    assert version.startswith("mobile_sam.prompt.") and ".v" in version
    for graph in ("prepare", "prompt"):
        url = f"/api/v1/models/mobile_sam/decoder.onnx?graph={graph}&v={version}"
        response = as_alice.get(url)
        assert response.status_code == 200
        assert response["ETag"] == f'"{version.replace(".prompt.", f".{graph}.")}"'
        assert as_alice.get(url, HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304
    bad = as_alice.get("/api/v1/models/mobile_sam/decoder.onnx?graph=hover")
    assert bad.status_code == 400 and "graph must be one of" in bad.json()["error"]
