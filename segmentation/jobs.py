"""Queueing embedding jobs: Celery when a broker is configured, else an in-process worker thread.

The in-process path exists so `make run` works on a laptop with no Redis; every test and every
deployment uses Celery.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import redis
from django.conf import settings
from django.db import close_old_connections
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_local_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")


def enqueue_embedding(image_id: int, *, interactive: bool = False) -> bool:
    """Queue the image's embedding job; `interactive` puts it before the bulk backlog.

    Call from `transaction.on_commit`, so the job never runs before its row is visible. A broker that
    is down does not fail the upload: the image stays `queued` and the stale-job sweep queues it again.
    """
    from .tasks import embed_image

    if not settings.CELERY_BROKER_URL:
        _local_worker.submit(_run_locally, image_id)
        return True
    priority = settings.INTERACTIVE_PRIORITY if interactive else settings.BULK_PRIORITY
    try:
        embed_image.apply_async(args=(image_id,), queue=settings.GPU_QUEUE, priority=priority, retry=False)
    except (KombuError, RedisError, OSError) as error:
        logger.warning("could not queue the embedding of image %s (%s); the sweep will retry", image_id, error)
        return False
    return True


def broker_backlog() -> int | None:
    """How many embedding jobs wait in the broker's queues (None when it cannot be asked)."""
    if not settings.CELERY_BROKER_URL:
        return None
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=5)
        return sum(cast(int, client.llen(key)) for key in settings.GPU_QUEUE_KEYS)
    except RedisError:
        return None


def _run_locally(image_id: int) -> None:
    from .services import embedding_compute

    close_old_connections()
    try:
        embedding_compute(image_id=image_id)
    finally:
        close_old_connections()
