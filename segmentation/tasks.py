"""Celery tasks: fetch by id, call a service."""

import logging

from celery import shared_task
from celery.signals import worker_process_init

from . import services
from .sam.checkpoints import CheckpointUnavailable

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(ConnectionError, TimeoutError),
    retry_backoff=True,
    max_retries=5,
)
def embed_image(self: object, image_id: int) -> None:
    try:
        services.embedding_compute(image_id=image_id)
    except CheckpointUnavailable as error:
        services.embedding_failed(image_id=image_id, reason=str(error))
    except (ValueError, OSError) as error:
        # The bytes were validated on upload, so this is permanent: say why instead of retrying forever.
        logger.exception("embedding of image %s failed", image_id)
        services.embedding_failed(image_id=image_id, reason=f"{type(error).__name__}: {error}")


@worker_process_init.connect
def load_model_once(**_: object) -> None:
    """Load the model when the worker process starts, not on its first job."""
    from . import model_runtime

    try:
        model_runtime.loaded_model()
    except CheckpointUnavailable as error:
        logger.error("model not available: %s", error)
