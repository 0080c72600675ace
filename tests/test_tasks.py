"""The embedding job through Redis and a real Celery worker process."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from redis import Redis

from segmentation import services
from segmentation.models import Embedding, Image, Project
from tests.conftest import FIXTURES
from tests.processes import celery_worker, database_url


def wait_for_status(image_id: int, statuses: set[str], timeout: float = 180) -> Image:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image = Image.objects.get(pk=image_id)
        if image.status in statuses:
            return image
        time.sleep(0.3)
    raise TimeoutError(f"image {image_id} still {image.status}")


@pytest.fixture
def worker_env(transactional_db: None, tmp_path: Path) -> dict[str, str]:
    Redis.from_url(settings.REDIS_URL).delete("gpu")  # stale jobs of earlier runs
    return {
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "REDIS_URL": settings.REDIS_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "DATA_DIR": str(tmp_path),
        "CHECKPOINT_DIR": str(settings.CHECKPOINT_DIR),
    }


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[None]:
    with celery_worker(worker_env, tmp_path / "worker.log"):
        yield


def test_the_worker_embeds_an_uploaded_image(worker: None, alice: User, project: Project) -> None:
    image = services.image_create(
        project=project, user=alice, data=(FIXTURES / "mobile_sam" / "coffee.png").read_bytes(), filename="coffee.png"
    )
    image = wait_for_status(image.id, {"ready", "failed"})
    assert image.status == "ready", image.error
    embedding = Embedding.objects.get(image=image)
    assert embedding.model_key == "mobile_sam"
    assert embedding.size_bytes > 2 * 1024 * 1024  # float16 1x256x64x64 plus header


def test_a_job_for_a_deleted_image_is_dropped(worker: None, alice: User, project: Project) -> None:
    first = services.image_create(
        project=project, user=alice, data=(FIXTURES / "mobile_sam" / "coffee.png").read_bytes(), filename="a.png"
    )
    first.delete()
    second = services.image_create(
        project=project, user=alice, data=(FIXTURES / "mobile_sam" / "chelsea.png").read_bytes(), filename="b.png"
    )
    assert wait_for_status(second.id, {"ready", "failed"}).status == "ready"
    assert Embedding.objects.count() == 1
