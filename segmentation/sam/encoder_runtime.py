"""Batched image encoding for the embedding worker: SamPredictor-exact preprocessing, fast encoder paths.

`EncoderRuntime(model, device=..., precision=...)` wraps a loaded `Sam` and turns RGB images into image
embeddings, (1, 256, 64, 64) float32 each, several images per encoder forward:

    runtime = EncoderRuntime(model, device=torch.device("cuda"), precision="bf16")
    embeddings = runtime.encode_batch([image_a, image_b])            # list of (1, 256, 64, 64)
    for embedding in runtime.encode_stream(lazily_decoded_images):  # overlaps CPU and device work
        ...

Preprocessing equals `predictor.encode_image` bit for bit: `preprocess` resizes on the CPU with Pillow
(ResizeLongestSide, the one step whose result depends on the library), and the float32 normalisation
and zero padding then run on the device with the same elementwise operations as `Sam.preprocess`.
Only the uint8 resized image crosses to the device, a quarter of the bytes of the normalised one.

Encoder paths, chosen from the device, the model and the options:

* CPU, MobileSAM (TinyViT), no compile: `tiny_vit_cpu.FusedTinyViTCPU`, folded BatchNorm and fused
  oneDNN kernels; float32 by default (max abs diff ~3e-6 against the module), or bfloat16 weights and
  activations with float32 LayerNorm statistics (precision="bf16"; about 2.3x faster again on a CPU
  with AMX, not exact).
* Otherwise the model's own encoder module under `torch.inference_mode`: SAM's ViT attends through
  SDPA with the decomposed relative-position bias as the attention mask, TinyViT through SDPA with its
  offset biases. precision="bf16" runs it under bfloat16 autocast with every LayerNorm forced to
  float32 (a forward pre-hook casts its input up, so the normalisation statistics never round to 8
  mantissa bits); channels_last lays out the convolutions' weights and input as cuDNN prefers;
  compile wraps it in `torch.compile` (batches are then padded to `max_batch_size` so that the graph
  is compiled once, not once per batch size).

The runtime prepares `model` in place for inference (eval mode, moved to `device`, memory format,
LayerNorm hooks for bf16): give it a model of its own. `threads` calls `torch.set_num_threads`, which
is process-wide.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from . import common, tiny_vit
from .sam import Sam
from .tiny_vit_cpu import FusedTinyViTCPU, fused_cpu_available
from .transforms import ResizeLongestSide

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")
DEFAULT_CUDA_BATCH = 8
# Batches queued ahead of the encoder by encode_stream: enough to hide one batch's preprocessing
# behind the previous batch's forward, few enough to bound the memory held (uint8 images).
PREFETCH_BATCHES = 2


def _float32_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: run a LayerNorm on a float32 copy of its input (bf16 autocast path)."""
    return (args[0].float(), *args[1:])


@dataclass
class _Launched:
    """A batch whose forward has been started: its embeddings (device or pinned host) and a sync point."""

    embeddings: torch.Tensor  # (n, 256, 64, 64) float32
    count: int
    done: torch.cuda.Event | None


class EncoderRuntime:
    """Encodes batches of (H, W, 3) uint8 RGB images into (1, 256, 64, 64) float32 embeddings.

    device: where the encoder runs (default: where `model` is). precision: "fp32" (default, exact) or
    "bf16" (see the module docstring). compile: `torch.compile` the encoder (CUDA; needs a C compiler).
    channels_last: None picks it for CUDA. threads: torch intra-op threads (process-wide), None leaves
    the setting alone. max_batch_size: images per forward (default 8 on CUDA, 1 on a CPU, where a
    batch brings nothing: each image's GEMMs are already large). fused_cpu: use the fused TinyViT CPU
    path; None uses it whenever it applies (CPU, MobileSAM, no compile, kernels available).
    """

    def __init__(
        self,
        model: Sam,
        *,
        device: torch.device | str | None = None,
        precision: Precision = "fp32",
        compile: bool = False,
        channels_last: bool | None = None,
        threads: int | None = None,
        max_batch_size: int | None = None,
        fused_cpu: bool | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device) if device is not None else model.device
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.precision: Precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if threads is not None:
            torch.set_num_threads(threads)
        self.model = model.to(self.device).eval()
        self.img_size = model.img_size
        self.transform = ResizeLongestSide(model.img_size)
        is_cuda = self.device.type == "cuda"
        self.max_batch_size = max_batch_size or (DEFAULT_CUDA_BATCH if is_cuda else 1)
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.compiled = compile
        encoder = model.image_encoder

        self._fused: FusedTinyViTCPU | None = None
        fused_applies = (
            self.device.type == "cpu"
            and not compile
            and isinstance(encoder, tiny_vit.TinyViTEncoder)
            and fused_cpu_available(self.dtype)
        )
        if fused_cpu is None:
            fused_cpu = fused_applies
        if fused_cpu:
            if not fused_applies:
                raise ValueError("the fused CPU path needs a MobileSAM model on the CPU, no compile, and oneDNN")
            assert isinstance(encoder, tiny_vit.TinyViTEncoder)
            self._fused = FusedTinyViTCPU(encoder, self.dtype)
        self.engine = "fused-cpu" if self._fused is not None else "module"

        self.channels_last = is_cuda if channels_last is None else channels_last
        if self._fused is None and self.channels_last:
            encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self._fused is None and precision == "bf16":
            for module in encoder.modules():
                if isinstance(module, (nn.LayerNorm, common.LayerNorm2d)):
                    module.register_forward_pre_hook(_float32_input)
        self._encoder: Any = encoder
        if compile and self._fused is None:
            self._encoder = torch.compile(encoder, dynamic=False)

    # -- preprocessing (CPU) -------------------------------------------------------------------------

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (3, h, w) uint8 CPU tensor, resized so the longest side is img_size.

        Pillow bilinear, exactly as SamPredictor; thread-safe (Pillow releases the GIL while resizing),
        so callers may run it in worker threads. Pinned memory when the device is CUDA, so the copy to
        the device can be asynchronous.
        """
        resized = self.transform.apply_image(image)  # (h, w, 3) uint8
        chw = torch.from_numpy(resized).permute(2, 0, 1)
        pin = self.device.type == "cuda"
        out = torch.empty(chw.shape, dtype=torch.uint8, pin_memory=pin)
        return out.copy_(chw)

    # -- encoding ------------------------------------------------------------------------------------

    def _assemble(self, resized: Sequence[torch.Tensor]) -> torch.Tensor:
        """(3, h, w) uint8 images -> (B, 3, S, S) float32 on the device: normalised, zero-padded.

        The same float32 operations as Sam.preprocess ((x - mean) / std, then zeros bottom/right), so
        the result is bitwise the predictor's input. B is padded to max_batch_size when compiled.
        """
        size = self.img_size
        rows = self.max_batch_size if self.compiled else len(resized)
        batch = torch.zeros((rows, 3, size, size), dtype=torch.float32, device=self.device)
        mean, std = self.model.pixel_mean, self.model.pixel_std
        for i, image in enumerate(resized):
            if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"expected a (3, h, w) uint8 tensor from preprocess(), got {tuple(image.shape)}")
            h, w = image.shape[1:]
            if max(h, w) != size:
                raise ValueError(f"image of {h}x{w} is not resized to a longest side of {size}")
            pixels = image.to(self.device, non_blocking=True).to(torch.float32)
            batch[i, :, :h, :w] = (pixels - mean) / std
        return batch

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised -> (B, 256, S/16, S/16) float32 on the device."""
        if self._fused is not None:
            return self._fused(batch)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                out = self._encoder(batch)
        else:
            out = self._encoder(batch)
        return out.to(torch.float32).contiguous()

    def encode_preprocessed(self, resized: Sequence[torch.Tensor]) -> torch.Tensor:
        """preprocess() outputs (at most max_batch_size) -> (n, 256, 64, 64) float32 on the device.

        One encoder forward. On CUDA it returns once the work is queued, not when it is done.
        """
        if not 0 < len(resized) <= self.max_batch_size:
            raise ValueError(f"give 1 to {self.max_batch_size} images, got {len(resized)}")
        with torch.inference_mode():
            return self._forward(self._assemble(resized))[: len(resized)]

    def _launch(self, resized: Sequence[torch.Tensor]) -> _Launched:
        embeddings = self.encode_preprocessed(resized)
        if self.device.type != "cuda":
            return _Launched(embeddings, len(resized), None)
        # Copy back asynchronously into pinned memory and remember when it is done, so the host can
        # queue the next batch before waiting for this one.
        host = torch.empty(embeddings.shape, dtype=embeddings.dtype, pin_memory=True)
        host.copy_(embeddings, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return _Launched(host, len(resized), done)

    @staticmethod
    def _finish(launched: _Launched) -> list[np.ndarray]:
        if launched.done is not None:
            launched.done.synchronize()
        array = launched.embeddings.cpu().numpy()
        return [array[i : i + 1] for i in range(launched.count)]

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(H, W, 3) uint8 RGB images, any sizes -> one (1, 256, 64, 64) float32 embedding per image.

        Images are encoded max_batch_size per forward, in order.
        """
        results: list[np.ndarray] = []
        for start in range(0, len(images), self.max_batch_size):
            chunk = images[start : start + self.max_batch_size]
            results.extend(self._finish(self._launch([self.preprocess(image) for image in chunk])))
        return results

    def encode_stream(
        self, images: Iterable[np.ndarray], batch_size: int | None = None, *, preprocess_workers: int = 1
    ) -> Generator[np.ndarray, None, None]:
        """Embeddings of `images` in order, (1, 256, 64, 64) float32 each, as a generator.

        A background thread pulls images from the iterable (so lazy decoding happens there too) and
        preprocesses the next batches, with `preprocess_workers` threads, while this thread runs the
        encoder. On CUDA the next batch is queued on the GPU before the previous one's embeddings are
        yielded, so the caller's work on them (serialising, storing) overlaps the GPU's. An exception
        from the iterable or the preprocessing is raised here after the embeddings before it.
        """
        size = batch_size or self.max_batch_size
        if not 0 < size <= self.max_batch_size:
            raise ValueError(f"batch_size must be 1 to {self.max_batch_size}")
        handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=PREFETCH_BATCHES)
        stop = threading.Event()

        def put(item: tuple[str, Any]) -> bool:
            # Time out and re-check `stop` so an abandoned generator never leaves this thread blocked.
            while not stop.is_set():
                try:
                    handoff.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            pool = ThreadPoolExecutor(preprocess_workers) if preprocess_workers > 1 else None
            try:
                iterator = iter(images)
                while chunk := list(itertools.islice(iterator, size)):
                    tensors = list(pool.map(self.preprocess, chunk)) if pool else [self.preprocess(i) for i in chunk]
                    if not put(("batch", tensors)):
                        return
                put(("end", None))
            except BaseException as error:  # handed to the consumer, which re-raises it
                put(("error", error))
            finally:
                if pool is not None:
                    pool.shutdown()

        producer = threading.Thread(target=produce, name="encoder-preprocess", daemon=True)
        producer.start()
        pending: _Launched | None = None
        try:
            while True:
                kind, payload = handoff.get()
                if kind == "batch":
                    launched = self._launch(payload)
                    if pending is not None:
                        yield from self._finish(pending)
                    pending = launched
                    continue
                if pending is not None:
                    yield from self._finish(pending)
                    pending = None
                if kind == "error":
                    raise payload
                return
        finally:
            stop.set()
            producer.join()
