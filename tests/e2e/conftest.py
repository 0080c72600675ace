"""The real stack for end-to-end tests: Postgres, Redis, a Celery worker and the ASGI server, driven
by Debian's Chromium through Playwright. The stack gets its own database and data folder."""

import contextlib
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.processes import BIN, REPO, asgi_server, celery_worker, free_port

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# WebGPU through SwiftShader, Chromium's software GPU: far too slow for use, but it runs the decoder's
# WebGPU path for real on a machine without a GPU.
WEBGPU_FLAGS = [f for f in CHROMIUM_FLAGS if f != "--disable-gpu"] + [
    "--enable-unsafe-webgpu",
    "--use-webgpu-adapter=swiftshader",
]
ARTIFACTS = REPO / "test-artifacts"
USERNAME, PASSWORD = "lena", "lena-password-1"


@dataclass
class Stack:
    url: str
    token: str
    env: dict[str, str]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Token {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
            return (
                json.loads(payload)
                if response.headers.get("Content-Type", "").startswith("application/json")
                else payload
            )


def _fresh_database(name: str) -> str:
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [str(BIN / "python"), "manage.py", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@contextlib.contextmanager
def running_stack(data_dir: Path, database: str, name: str) -> Iterator[Stack]:
    """The real stack on a fresh Postgres database `database`: migrated, the model prepared as `make run`
    does (checkpoint fetched, ONNX graphs exported), one user with an API token, a Celery worker and
    daphne, their logs in `data_dir`."""
    env = {
        "DATABASE_URL": _fresh_database(database),
        "REDIS_URL": os.environ["REDIS_URL"],
        "DATA_DIR": str(data_dir),
        "MEDIA_ROOT": str(data_dir / "media"),
        "CHECKPOINT_DIR": os.environ.get("CHECKPOINT_DIR", str(REPO / "data" / "checkpoints")),
        "DECODER_DIR": str(REPO / "data" / "decoders"),
        "SECRET_KEY": f"{name}-secret",
        "DEBUG": "0",
    }
    import redis

    redis.Redis.from_url(env["REDIS_URL"]).delete("gpu", "gpu:5")  # jobs an earlier run left behind
    _manage(env, "migrate", "--noinput")
    _manage(env, "prepare_model")
    _manage(
        env,
        "shell",
        "-c",
        f"from django.contrib.auth.models import User; User.objects.create_user('{USERNAME}', password='{PASSWORD}')",
    )
    token = _manage(env, "create_token", USERNAME).split()[-1]
    port = free_port()
    with celery_worker(env, data_dir / "worker.log", name=name), asgi_server(env, data_dir / "asgi.log", port):
        yield Stack(url=f"http://127.0.0.1:{port}", token=token, env=env)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), f"samlabel_e2e_{os.getpid()}", "e2e") as stack:
        yield stack


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def webgpu_browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=WEBGPU_FLAGS, headless=True)
    yield browser
    browser.close()


def _page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))
    yield page
    if messages:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "console.log").open("a").write("\n".join(messages) + "\n")
    context.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    yield from _page(browser)


@pytest.fixture
def webgpu_page(webgpu_browser: Browser, stack: Stack) -> Iterator[Page]:
    yield from _page(webgpu_browser)


def log_in(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.url}/accounts/login/")
    page.fill("input[name=username]", USERNAME)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.url}/")


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


__all__ = ["Path", "log_in", "screenshot"]
