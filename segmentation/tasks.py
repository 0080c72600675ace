"""Celery tasks: fetch by id, call a service."""

import logging

from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.conf import settings
from django.db import InterfaceError, OperationalError

from . import services
from .sam.checkpoints import CheckpointUnavailable

logger = logging.getLogger(__name__)


# Transient: the database or storage blinked. Retried with backoff; anything else is permanent.
TRANSIENT_ERRORS = (ConnectionError, TimeoutError, OperationalError, InterfaceError)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    retry_backoff_max=120,
    max_retries=8,
)
def embed_image(self: object, image_id: int) -> None:
    try:
        services.embedding_compute(image_id=image_id)
    except CheckpointUnavailable as error:
        services.embedding_failed(image_id=image_id, reason=str(error))
    except TRANSIENT_ERRORS:
        raise
    except (ValueError, OSError, RuntimeError) as error:
        # The bytes were validated on upload, so this is permanent: say why instead of retrying forever.
        logger.exception("embedding of image %s failed", image_id)
        services.embedding_failed(image_id=image_id, reason=f"{type(error).__name__}: {error}")


@shared_task
def requeue_stale_jobs() -> list[int]:
    """Periodic (Celery beat): queue again the jobs that the database says were lost."""
    return services.requeue_stale_images(older_than_seconds=settings.STALE_JOB_SECONDS)


@shared_task
def delete_orphan_files() -> int:
    """Periodic (Celery beat): delete stored files that no row refers to, past the grace period."""
    return len(services.orphan_files_delete(older_than_seconds=settings.ORPHAN_GRACE_SECONDS))


@worker_ready.connect
def sweep_at_start(**_: object) -> None:
    """A worker that starts after a crash picks up what the crashed one left behind."""
    requeue_stale_jobs.delay()


@worker_process_init.connect
def load_model_once(**_: object) -> None:
    """Load the model when the worker process starts, not on its first job."""
    from . import model_runtime

    try:
        model_runtime.encoder_runtime()
    except CheckpointUnavailable as error:
        logger.error("model not available: %s", error)
