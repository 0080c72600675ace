"""No job is lost: a worker killed mid-job, a broker restarted during a bulk upload."""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import User
from redis import Redis
from rest_framework.authtoken.models import Token

from segmentation import services
from segmentation.models import Embedding, Image, Project
from tests.conftest import FIXTURES
from tests.processes import asgi_server, celery_worker, database_url, free_port

PHOTOS = [FIXTURES / "mobile_sam" / name for name in ("astronaut.png", "coffee.png", "chelsea.png")]


def wait_until_all_ready(count: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = list(Image.objects.values_list("status", flat=True))
        if len(statuses) == count and all(status == "ready" for status in statuses):
            return
        assert "failed" not in statuses, list(Image.objects.values_list("error", flat=True))
        time.sleep(0.3)
    raise TimeoutError(f"not all ready: {list(Image.objects.values_list('id', 'status'))}")


def distinct_photos(count: int) -> list[bytes]:
    """`count` different images (so none is a duplicate of another) from the fixture photos."""
    from tests.conftest import image_bytes

    return [PHOTOS[i % 3].read_bytes() if i < 3 else image_bytes("PNG", size=(64 + i, 48)) for i in range(count)]


@pytest.fixture
def env(transactional_db: None, tmp_path: Path) -> dict[str, str]:
    Redis.from_url(settings.REDIS_URL).delete(*settings.GPU_QUEUE_KEYS)
    return {
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "REDIS_URL": settings.REDIS_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "DATA_DIR": str(tmp_path),
        "CHECKPOINT_DIR": str(settings.CHECKPOINT_DIR),
        "STALE_JOB_SECONDS": "2",
        "STALE_SWEEP_SECONDS": "2",
        "CELERY_VISIBILITY_TIMEOUT": "20",
    }


def test_a_worker_killed_mid_job_loses_nothing(
    env: dict[str, str], tmp_path: Path, alice: User, project: Project
) -> None:
    with celery_worker(env, tmp_path / "first.log", name="first") as first:
        for index, data in enumerate(distinct_photos(3)):
            services.image_create(project=project, user=alice, data=data, filename=f"{index}.png")
        deadline = time.monotonic() + 120
        while not Image.objects.filter(status="embedding").exists():
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.02)
        os.killpg(first.pid, signal.SIGKILL)  # the whole worker, pool children included
        first.wait()
    killed_mid_job = list(Image.objects.filter(status="embedding").values_list("id", flat=True))
    assert killed_mid_job, "the worker was not killed in the middle of a job"

    with celery_worker(env, tmp_path / "second.log", name="second", beat=True):
        wait_until_all_ready(3)
        time.sleep(3)  # let any redelivered duplicate run too: it must be a no-op
    assert Embedding.objects.count() == 3
    assert sorted(Embedding.objects.values_list("image_id", flat=True)) == sorted(
        Image.objects.values_list("id", flat=True)
    )


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen]]]:
    """A Redis of our own (no persistence, like the machine's), so the test may kill and restart it."""
    port = free_port()
    processes: list[subprocess.Popen] = []

    def start() -> None:
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        processes.append(subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, start_new_session=True))
        client = Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("redis did not start")

    start()
    yield port, processes
    for process in processes:
        process.kill()
        process.wait()


def test_a_broker_restart_during_a_bulk_upload_loses_nothing(
    env: dict[str, str], tmp_path: Path, alice: User, project: Project, own_redis: tuple[int, list[subprocess.Popen]]
) -> None:
    port, processes = own_redis
    env = {**env, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    token = Token.objects.create(user=alice).key
    photos = distinct_photos(9)
    web_port = free_port()
    with celery_worker(env, tmp_path / "worker.log", beat=True), asgi_server(env, tmp_path / "web.log", web_port):
        url = f"http://127.0.0.1:{web_port}/api/v1/projects/{project.id}/images/"
        headers = {"Authorization": f"Token {token}"}

        def upload(index: int) -> None:
            response = requests.post(url, headers=headers, files={"file": (f"{index}.png", photos[index])}, timeout=60)
            assert response.status_code == 201, response.text

        for index in range(3):
            upload(index)
        processes[-1].send_signal(signal.SIGKILL)  # the broker dies, and with it every queued message
        processes[-1].wait()
        for index in range(3, 6):
            upload(index)  # accepted and committed, although nothing can be queued now
        restart = processes[0].args
        processes.append(subprocess.Popen(restart, cwd=tmp_path, stdout=subprocess.DEVNULL, start_new_session=True))
        for index in range(6, 9):
            upload(index)
        wait_until_all_ready(9)
    assert Embedding.objects.count() == 9
