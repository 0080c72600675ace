"""Real processes for tests: a Celery worker and the ASGI server, started and stopped like in production."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def database_url(settings_db: dict) -> str:
    """The URL of the database Django is using now (pytest-django's test database)."""
    host = settings_db.get("HOST") or "127.0.0.1"
    port = settings_db.get("PORT") or 5432
    user = settings_db.get("USER") or "postgres"
    return f"postgres://{user}@{host}:{port}/{settings_db['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_line(log: Path, needle: str, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and needle in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"process exited early:\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"{needle!r} not seen in {log} within {timeout}s:\n{log.read_text(errors='replace')[-4000:]}")


@contextmanager
def celery_worker(
    env: dict[str, str], log: Path, name: str = "test", *, beat: bool = False
) -> Iterator[subprocess.Popen]:
    """A real `celery worker` on the gpu queue; yields once it is ready for jobs."""
    command = [
        str(BIN / "celery"),
        "-A",
        "webapp",
        "worker",
        "-Q",
        "gpu,default",
        "--concurrency",
        "1",
        "--loglevel",
        "INFO",
        "-n",
        f"{name}-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    if beat:
        command += ["-B", "--schedule", str(log.with_suffix(".beat"))]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_line(log, "ready.", timeout=180, process=process)
        yield process
    finally:
        stop(process)


@contextmanager
def asgi_server(env: dict[str, str], log: Path, port: int) -> Iterator[subprocess.Popen]:
    command = [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "webapp.asgi:application"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_line(log, "Listening on", timeout=60, process=process)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
