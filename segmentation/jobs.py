"""Queueing embedding jobs: Celery when a broker is configured, else an in-process worker thread.

The in-process path exists so `make run` works on a laptop with no Redis; every test and every
deployment uses Celery.
"""

from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections

_local_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")


def enqueue_embedding(image_id: int) -> None:
    """Call from `transaction.on_commit`, so the job never runs before its row is visible."""
    from .tasks import embed_image

    if settings.CELERY_BROKER_URL:
        embed_image.apply_async(args=(image_id,))
    else:
        _local_worker.submit(_run_locally, image_id)


def _run_locally(image_id: int) -> None:
    from .services import embedding_compute

    close_old_connections()
    try:
        embedding_compute(image_id=image_id)
    finally:
        close_old_connections()
