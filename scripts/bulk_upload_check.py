"""A newcomer drops N photos on a project page at once and watches them all become ready.

Starts the real stack as the end-to-end tests do (Postgres, Redis, a Celery worker with the real
MobileSAM checkpoint, daphne), makes N distinct photo-like images (crops, rotations and colour shifts
of the fixture photos, 300-800 px, JPEG and PNG), drops them all into the project page's upload input
in Chromium, and watches the page until every tile says `ready`, checking the API too. Prints the
timings and what went wrong, and saves screenshots to test-artifacts/bulk-*.png.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/samlabel_bulk REDIS_URL=redis://127.0.0.1:6379/12 \\
        .venv/bin/python scripts/bulk_upload_check.py --count 200

The database named in DATABASE_URL is dropped and created afresh.
"""

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from tests.e2e.conftest import ARTIFACTS, CHROMIUM_FLAGS, log_in, running_stack  # noqa: E402
from tests.e2e.photos import make_photos  # noqa: E402


def page_counts(page: Page) -> dict[str, Any]:
    return page.evaluate(
        """() => {
            const tiles = [...document.querySelectorAll('#image-grid .tile')];
            const by = (s) => tiles.filter((t) => t.dataset.status === s).length;
            const rows = [...document.querySelectorAll('#upload-list li')];
            return {
                uploaded_text: document.getElementById('upload-count')?.textContent || '',
                ready_text: document.getElementById('ready-count')?.textContent || '',
                total_bar: Number(document.getElementById('upload-total')?.value || 0),
                rows: rows.length,
                rows_done: rows.filter((r) => r.dataset.state === 'done').length,
                rows_failed: rows.filter((r) => r.dataset.state === 'failed').length,
                failed_messages: rows.filter((r) => r.dataset.state === 'failed')
                    .map((r) => r.querySelector('.fname').textContent + ': ' + r.querySelector('.msg').textContent),
                tiles: tiles.length,
                queued: by('queued'), embedding: by('embedding'), ready: by('ready'), failed: by('failed'),
                thumbs_loaded: tiles.filter((t) => { const i = t.querySelector('img');
                    return i.complete && i.naturalWidth > 0; }).length,
                live: document.getElementById('live-status')?.textContent || '',
            };
        }"""
    )


def shoot(page: Page, name: str) -> list[str]:
    ARTIFACTS.mkdir(exist_ok=True)
    view, full = ARTIFACTS / f"{name}.png", ARTIFACTS / f"{name}-full.png"
    page.screenshot(path=str(view))
    page.screenshot(path=str(full), full_page=True)
    return [str(view.relative_to(REPO)), str(full.relative_to(REPO))]


def run(count: int, timeout: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bulk-upload-"))
    (work / "photos").mkdir()
    (work / "data").mkdir()
    photos = make_photos(count, work / "photos")
    sizes = [Image.open(p).size for p in photos]
    assert len({p.read_bytes() for p in photos}) == count, "the photos must all differ"
    report: dict[str, Any] = {
        "count": count,
        "bytes_total": sum(p.stat().st_size for p in photos),
        "sizes_px": [min(max(s) for s in sizes), max(max(s) for s in sizes)],
        "formats": {"jpeg": sum(p.suffix == ".jpg" for p in photos), "png": sum(p.suffix == ".png" for p in photos)},
        "cpu_count": os.cpu_count(),
    }
    console: list[str] = []
    list_requests: list[float] = []
    database = os.environ["DATABASE_URL"].rsplit("/", 1)[1]
    with running_stack(work / "data", database, "bulk") as stack, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        log_in(page, stack)
        page.fill("input[name=name]", "Bulk")
        page.click("#new-project button[type=submit]")
        page.wait_for_url("**/projects/*/")
        project_id = int(re.search(r"/projects/(\d+)/", page.url).group(1))  # type: ignore[union-attr]
        page.wait_for_function("document.getElementById('live-status').textContent === 'live'")
        list_path = f"/api/v1/projects/{project_id}/images/"
        page.on(
            "request",
            lambda r: list_requests.append(time.monotonic())
            if r.method == "GET" and r.url.endswith(list_path)
            else None,
        )

        start = time.monotonic()
        page.set_input_files("#file-input", [str(p) for p in photos])
        report["set_input_files_s"] = round(time.monotonic() - start, 2)
        timeline, shots = [], {}
        uploaded_at = ready_at = api_ready_at = None
        last_api = 0.0
        api_status: dict[str, int] = {}
        while time.monotonic() - start < timeout:
            now = time.monotonic() - start
            counts = page_counts(page)
            if now - last_api >= 2 or counts["ready"] == count:
                images = stack.api("GET", list_path)
                api_status = {
                    s: sum(i["status"] == s for i in images) for s in ("queued", "embedding", "ready", "failed")
                }
                api_status["rows"] = len(images)
                last_api = now
            timeline.append(
                {"t": round(now, 1), **{k: v for k, v in counts.items() if k != "failed_messages"}, "api": api_status}
            )
            done = counts["rows_done"] + counts["rows_failed"]
            if "upload" not in shots and done >= count // 2:
                shots["upload"] = shoot(page, "bulk-mid-upload")
            if uploaded_at is None and done == count:
                uploaded_at = now
            if "embed" not in shots and counts["ready"] >= count // 2:
                shots["embed"] = shoot(page, "bulk-mid-embedding")
            if ready_at is None and counts["ready"] == count:
                ready_at = now
            if api_ready_at is None and api_status.get("ready") == count:
                api_ready_at = now
            if ready_at is not None and api_ready_at is not None:
                break
            if counts["failed"] or counts["rows_failed"]:
                report.setdefault("failures_seen_at", now)
            time.sleep(0.5)
        counts = page_counts(page)
        shots["end"] = shoot(page, "bulk-all-ready")
        page.reload()
        page.wait_for_function(
            f"document.querySelectorAll('#image-grid .tile[data-status=ready]').length === {count}", timeout=30_000
        )
        page.wait_for_timeout(1500)  # lazy thumbnails in view
        shots["reloaded"] = shoot(page, "bulk-after-reload")
        reloaded = page_counts(page)
        browser.close()

    worker_log = (work / "data" / "worker.log").read_text(errors="replace")
    asgi_log = (work / "data" / "asgi.log").read_text(errors="replace")
    embed_times = [float(t) for t in re.findall(r"embed_image\[[^\]]+\] succeeded in ([0-9.]+)s", worker_log)]
    report.update(
        {
            "all_uploaded_s": None if uploaded_at is None else round(uploaded_at, 1),
            "all_ready_page_s": None if ready_at is None else round(ready_at, 1),
            "all_ready_api_s": None if api_ready_at is None else round(api_ready_at, 1),
            "final_page": counts,
            "after_reload": {k: reloaded[k] for k in ("tiles", "ready", "thumbs_loaded")},
            "embed_jobs": len(embed_times),
            "embed_job_s_median": round(float(np.median(embed_times)), 3) if embed_times else None,
            "image_list_fetches": len(list_requests),
            "console_errors": console[:50],
            "worker_errors": [line for line in worker_log.splitlines() if " ERROR" in line or "Traceback" in line][:20],
            "asgi_errors": [line for line in asgi_log.splitlines() if " ERROR" in line or "Traceback" in line][:20],
            "asgi_5xx": len(re.findall(r'" 5\d\d ', asgi_log)),
            "screenshots": shots,
            "work_dir": str(work),
        }
    )
    (ARTIFACTS / "bulk-timeline.json").write_text(json.dumps(timeline, indent=1))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=1200, help="seconds to wait for all ready")
    args = parser.parse_args()
    print(json.dumps(run(args.count, args.timeout), indent=1))


if __name__ == "__main__":
    main()
