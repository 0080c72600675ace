"""A newcomer drops a batch of photos on a project and watches them all become ready, in Chromium
against the real stack. (`scripts/bulk_upload_check.py` does the same with 200 and times it.)"""

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import Stack, log_in, screenshot
from tests.e2e.photos import make_photos

pytestmark = pytest.mark.e2e
# More than the page's 4 parallel uploads; each costs an encoder run (seconds on a CPU). The page logic is the
# same for 200: scripts/bulk_upload_check.py.
COUNT = 8


def test_a_dropped_batch_becomes_ready_and_the_page_says_so(page: Page, stack: Stack, tmp_path: object) -> None:
    photos = make_photos(COUNT, tmp_path)  # type: ignore[arg-type]
    assert len({photo.read_bytes() for photo in photos}) == COUNT
    log_in(page, stack)
    page.fill("input[name=name]", "Holiday")
    page.click("#new-project button[type=submit]")
    page.wait_for_url("**/projects/*/")
    project_id = int(page.locator("#project").get_attribute("data-project-id") or 0)
    expect(page.locator("#live-status")).to_have_text("live")
    expect(page.locator("#image-summary")).to_be_hidden()

    page.set_input_files("#file-input", [str(photo) for photo in photos])
    # Every file gets a row, in the order dropped, and the overall line counts them in.
    expect(page.locator("#upload-count")).to_have_text(f"{COUNT} of {COUNT} uploaded", timeout=60_000)
    assert page.locator("#upload-list li .fname").all_text_contents() == [photo.name for photo in photos]
    assert page.locator("#upload-list li .msg").all_text_contents() == ["uploaded"] * COUNT
    expect(page.locator("#image-grid .tile")).to_have_count(COUNT)
    expect(page.locator("#ready-count")).to_contain_text(f"of {COUNT} images ready")

    expect(page.locator("#ready-count")).to_have_text(f"{COUNT} of {COUNT} images ready", timeout=240_000)
    expect(page.locator("#image-grid .tile[data-status=ready]")).to_have_count(COUNT)
    page.wait_for_function(
        "[...document.querySelectorAll('#image-grid .tile img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    screenshot(page, "bulk-upload-ready")

    images = stack.api("GET", f"/api/v1/projects/{project_id}/images/")
    assert sorted(image["name"] for image in images) == sorted(photo.name for photo in photos)
    assert {image["status"] for image in images} == {"ready"}
    tile_ids = [
        int(i or 0) for i in page.locator("#image-grid .tile").evaluate_all("ts => ts.map(t => t.dataset.imageId)")
    ]
    assert tile_ids == [image["id"] for image in images]  # the grid in the API's order, not upload completion's
