"""The embedding job through Redis and a real Celery worker process."""

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from redis import Redis

from segmentation import services
from segmentation.models import Embedding, Image, Project
from tests.conftest import FIXTURES, image_bytes
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
    Redis.from_url(settings.REDIS_URL).delete(*settings.GPU_QUEUE_KEYS)  # stale jobs of earlier runs
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
    image, _ = services.image_create(
        project=project, user=alice, data=(FIXTURES / "mobile_sam" / "coffee.png").read_bytes(), filename="coffee.png"
    )
    image = wait_for_status(image.id, {"ready", "failed"})
    assert image.status == "ready", image.error
    embedding = Embedding.objects.get(image=image)
    assert embedding.model_key == "mobile_sam"
    assert 0 < embedding.size_bytes <= 1024 * 1024  # rans (the default): one byte per value at most, whole blob


def test_a_job_for_a_deleted_image_is_dropped(worker: None, alice: User, project: Project) -> None:
    first, _ = services.image_create(
        project=project, user=alice, data=(FIXTURES / "mobile_sam" / "coffee.png").read_bytes(), filename="a.png"
    )
    first.delete()
    second, _ = services.image_create(
        project=project, user=alice, data=(FIXTURES / "mobile_sam" / "chelsea.png").read_bytes(), filename="b.png"
    )
    assert wait_for_status(second.id, {"ready", "failed"}).status == "ready"
    assert Embedding.objects.count() == 1


def test_the_image_someone_opens_goes_before_the_backlog(
    worker_env: dict[str, str], tmp_path: Path, alice: User, project: Project
) -> None:
    images = [
        services.image_create(
            project=project, user=alice, data=(FIXTURES / "mobile_sam" / name).read_bytes(), filename=name
        )[0]
        for name in ("astronaut.png", "coffee.png", "chelsea.png")
    ]
    services.image_open(image=images[-1])  # the last of the backlog is opened in the annotator
    with celery_worker(worker_env, tmp_path / "worker.log"):
        first_ready = None
        deadline = time.monotonic() + 180
        while first_ready is None and time.monotonic() < deadline:
            first_ready = Image.objects.filter(status="ready").values_list("id", flat=True).first()
            time.sleep(0.05)
    assert first_ready == images[-1].id


def test_the_sweep_requeues_what_the_broker_lost(transactional_db: None, alice: User, project: Project) -> None:
    from django.utils import timezone

    redis = Redis.from_url(settings.REDIS_URL)
    redis.delete(*settings.GPU_QUEUE_KEYS)
    old = timezone.now() - timedelta(hours=1)
    queued, _ = services.image_create(project=project, user=alice, data=image_bytes("PNG", size=(10, 10)), filename="q")
    running, _ = services.image_create(
        project=project, user=alice, data=image_bytes("PNG", size=(11, 10)), filename="r"
    )
    fresh, _ = services.image_create(project=project, user=alice, data=image_bytes("PNG", size=(12, 10)), filename="f")
    Image.objects.filter(pk=running.pk).update(status="embedding")
    Image.objects.filter(pk__in=[queued.pk, running.pk]).update(updated_at=old)

    redis.delete(*settings.GPU_QUEUE_KEYS)  # the broker lost every message
    assert sorted(services.requeue_stale_images(older_than_seconds=600)) == [queued.id, running.id]
    assert redis.llen("gpu:5") == 2
    assert Image.objects.get(pk=running.pk).status == "queued"  # the dead worker's claim is void
    # Touched: the next sweep waits a full deadline before trying them again.
    assert services.requeue_stale_images(older_than_seconds=600) == []

    # While the broker still holds jobs, a long-queued image is just waiting its turn.
    Image.objects.filter(pk=queued.pk).update(updated_at=old)
    assert services.requeue_stale_images(older_than_seconds=600) == []
    assert fresh.id not in services.requeue_stale_images(older_than_seconds=0)
    redis.delete(*settings.GPU_QUEUE_KEYS)
