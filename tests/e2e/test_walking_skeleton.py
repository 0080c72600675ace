"""A labeller's first minute, in Chromium against the real stack and the real MobileSAM weights:
log in, create a project, upload a photo, wait for its embedding, click an object, save it, download it."""

import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage
from playwright.sync_api import Page, expect

from segmentation import rle
from tests.conftest import FIXTURES
from tests.e2e.conftest import Stack, log_in, screenshot

pytestmark = pytest.mark.e2e
MOBILE_SAM = FIXTURES / "mobile_sam"


def official_one_point(image: str) -> tuple[list[float], np.ndarray]:
    """The official click and the official best mask for it (multimask, highest predicted IoU)."""
    manifest = json.loads((MOBILE_SAM / "manifest.json").read_text())
    case = next(c for c in manifest["cases"] if c["image"] == image)
    prompt = next(p for p in case["prompts"] if p["name"] == "one_point")
    outputs = np.load(MOBILE_SAM / prompt["outputs"])
    masks = (
        np.unpackbits(outputs["masks"], axis=-1, count=case["width"])
        .astype(bool)
        .reshape(-1, case["height"], case["width"])
    )
    return prompt["points"][0], masks[int(np.argmax(outputs["iou"].reshape(-1)))]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def click_at_image_point(page: Page, x: float, y: float, width: int, height: int) -> None:
    box = page.locator("#mask-canvas").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + x / width * box["width"], box["y"] + y / height * box["height"])


def test_upload_click_save_download(page: Page, stack: Stack, tmp_path: object) -> None:
    log_in(page, stack)
    page.fill("input[name=name]", "Space")
    page.click("#new-project button[type=submit]")
    page.wait_for_url("**/projects/*/")
    expect(page.locator("#live-status")).to_have_text("live")

    page.set_input_files("#file-input", str(MOBILE_SAM / "astronaut.png"))
    tile = page.locator(".tile").first
    expect(tile).to_have_attribute("data-status", "ready", timeout=180_000)
    screenshot(page, "project-ready")

    tile.locator("a").click()
    page.wait_for_url("**/images/*/")
    expect(page.locator("#annotator")).to_have_attribute("data-ready", "1", timeout=60_000)
    image_id = int(page.locator("#annotator").get_attribute("data-image-id") or 0)

    (x, y), official_mask = official_one_point("astronaut.png")
    click_at_image_point(page, x, y, 512, 512)
    expect(page.locator("#annotator")).to_have_attribute("data-decodes", "1", timeout=30_000)
    screenshot(page, "annotator-click")

    page.fill("#label-input", "helmet")
    page.locator("#mask-canvas").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#mask-list li")).to_have_count(1, timeout=15_000)
    screenshot(page, "annotator-saved")

    with page.expect_download() as download_info:
        page.locator("#mask-list li .png").click()
    downloaded = np.asarray(PILImage.open(io.BytesIO(download_info.value.path().read_bytes()))) == 255
    assert downloaded.shape == official_mask.shape
    assert iou(downloaded, official_mask) >= 0.99

    saved = stack.api("GET", f"/api/v1/images/{image_id}/masks/")
    assert saved[0]["label"] == "helmet"
    assert saved[0]["points"][0][2] == 1
    assert abs(saved[0]["points"][0][0] - x) < 1.5 and abs(saved[0]["points"][0][1] - y) < 1.5
    server = stack.api("POST", f"/api/v1/images/{image_id}/segment", {"points": saved[0]["points"], "multimask": True})
    assert iou(rle.decode(server["masks"][0]["rle"]), downloaded) >= 0.99
    assert np.array_equal(rle.decode(saved[0]["rle"]), downloaded)
