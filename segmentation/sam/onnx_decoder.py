"""Prompt encoder + mask decoder + mask postprocessing as one ONNX graph, and a runner for it.

The same file serves the browser (onnxruntime-web) and server-side decoding (`OnnxDecoder`).

Graph contract (Meta's input names; N is dynamic, H and W follow orig_im_size):

    inputs
      image_embeddings  float32 (1, 256, 64, 64)   the image encoder output
      point_coords      float32 (1, N, 2)          (x, y) in the resized input frame, i.e. original
                                                   pixels scaled as ResizeLongestSide.apply_coords does
      point_labels      float32 (1, N)             1 positive, 0 negative, 2 box top-left,
                                                   3 box bottom-right, -1 padding
      mask_input        float32 (1, 1, 256, 256)   low-res logits of an earlier prediction
      has_mask_input    float32 (1,)               1 to use mask_input, 0 to ignore it
      orig_im_size      float32 (2,)               original image [H, W]
    outputs
      masks             float32 (1, 4, H, W)       logits at the original size (threshold at 0.0)
      iou_predictions   float32 (1, 4)             predicted IoU of each mask
      low_res_masks     float32 (1, 4, 256, 256)   logits to feed back as mask_input

Prompts are laid out as SamPredictor lays them out: the clicked points, then either the box as two
corner points (labels 2, 3) or, when there is no box, one padding point (0, 0) with label -1.

Multimask choice: the graph always returns the outputs of all four mask tokens, and the caller
selects: single-mask output is token 0 (`[:, 0:1]`), multimask output is tokens 1..3 (`[:, 1:4]`).
This is exactly SamPredictor's `multimask_output` semantics with one graph and no extra input; there
is no stability-score substitution and no "best mask" selection inside the graph. The price is
upscaling four masks instead of one or three.

The crop that removes the square padding is computed inside the graph from orig_im_size (the resized
size is round-half-up of side * 1024 / max(H, W), in exact integer arithmetic that agrees with
`get_preprocess_shape`), so one exported file is correct for every image size and aspect ratio
(Meta's export script bakes the crop size of its example image into the graph).
"""

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from .prompt_encoder import BOX_BOTTOM_RIGHT_LABEL, BOX_TOP_LEFT_LABEL, PAD_LABEL
from .registry import ModelSpec, file_sha256
from .sam import Sam
from .transforms import ResizeLongestSide

# Bump whenever the exported graph changes, so cached files from older code are never reused.
EXPORT_FORMAT_VERSION = 1
OPSET = 17

INPUT_NAMES = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")
SINGLE_MASK = slice(0, 1)
MULTI_MASK = slice(1, 4)


def crop_size(orig_im_size: torch.Tensor, img_size: int) -> torch.Tensor:
    """[..., (H, W)] float -> int64 [..., (h, w)] of the resized image, as get_preprocess_shape gives.

    Integer arithmetic: round-half-up of side * img_size / longest is
    (2 * img_size * side + longest) // (2 * longest). For every image up to 40000 px per side this
    equals the reference's float64 `int(side * (img_size / longest) + 0.5)` (checked exhaustively
    once; tests/test_sam_onnx.py re-checks every size up to 2500 px), and int64 Mul/Add/Div are
    kernels every ONNX runtime has, unlike float64 ones.
    """
    size = orig_im_size.to(torch.int64)
    longest = torch.maximum(size[..., 0], size[..., 1]).unsqueeze(-1)
    return torch.div(2 * img_size * size + longest, 2 * longest, rounding_mode="trunc")


class SamDecoderGraph(nn.Module):
    """The module traced into ONNX; see the module docstring for the input/output contract."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.img_size = model.img_size

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shapes as in the module docstring; returns (masks, iou_predictions, low_res_masks)."""
        sparse = self.prompt_encoder.embed_points(point_coords, point_labels)
        # Blend instead of branching: multiplying by exact 0/1 yields exactly one of the two embeddings.
        dense = has_mask_input * self.prompt_encoder.embed_masks(mask_input)
        dense = dense + (1 - has_mask_input) * self.prompt_encoder.no_mask_dense(1)
        low_res, iou = self.mask_decoder.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense
        )

        masks = F.interpolate(low_res, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        crop = crop_size(orig_im_size, self.img_size)
        # Tensor bounds trace to a dynamic Slice (not a constant), which is what keeps this size-agnostic.
        masks = masks[..., : crop[0], : crop[1]]
        out_size = orig_im_size.to(torch.int64)
        # Tensors, not ints, on purpose: the traced Resize then takes its size from orig_im_size.
        dynamic_size = (out_size[0], out_size[1])
        masks = F.interpolate(masks, dynamic_size, mode="bilinear", align_corners=False)  # type: ignore[arg-type]
        return masks, iou, low_res


def _example_inputs() -> tuple[torch.Tensor, ...]:
    """Tracing inputs. Values are arbitrary (nothing branches on them) but deterministic, so the
    export does not touch the global RNG; sizes that differ between axes keep shapes from aliasing."""
    return (
        torch.zeros(1, 256, 64, 64),
        torch.tensor([[[100.0, 200.0], [300.0, 50.0], [0.0, 0.0]]]),
        torch.tensor([[1.0, 0.0, float(PAD_LABEL)]]),
        torch.zeros(1, 1, 256, 256),
        torch.tensor([1.0]),
        torch.tensor([1500.0, 2000.0]),
    )


def export_decoder(model: Sam, path: Path) -> None:
    """Write the decoder graph of `model` to `path` (TorchScript-based exporter, opset 17)."""
    graph = SamDecoderGraph(model).eval()
    dynamic_axes = {
        "point_coords": {1: "num_points"},
        "point_labels": {1: "num_points"},
        "masks": {2: "height", 3: "width"},
    }
    with warnings.catch_warnings(), torch.no_grad():
        # The exporter announces its own deprecation and warns about traced Python values that are
        # constants here (head sizes); the dynamic parts are covered by tests across image shapes.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            graph,
            _example_inputs(),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def decoder_onnx_path(spec: ModelSpec, cache_dir: Path, checkpoint_sha256: str | None = None) -> Path:
    """Cache file name for a model's decoder: model key + checkpoint hash + export format version."""
    sha = checkpoint_sha256 or spec.checkpoint_sha256
    if not sha:
        raise ValueError(f"{spec.key}: the checkpoint sha256 is needed to name the decoder cache file")
    return cache_dir / f"{spec.key}.decoder.{sha[:16]}.v{EXPORT_FORMAT_VERSION}.onnx"


def ensure_decoder_onnx(spec: ModelSpec, model: Sam, checkpoint_path: Path, cache_dir: Path) -> Path:
    """Path of the exported decoder for `spec`, exporting it from `model` first if missing.

    The name includes the checkpoint's hash, so a changed checkpoint never reuses a stale file; the
    file appears atomically, so concurrent workers never read a half-written one.
    """
    sha = spec.checkpoint_sha256 or file_sha256(checkpoint_path)
    path = decoder_onnx_path(spec, cache_dir, sha)
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        export_decoder(model, Path(tmp_name))
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


@dataclass(frozen=True)
class DecoderResult:
    masks: np.ndarray  # bool (C, H, W) at the original image size
    scores: np.ndarray  # float32 (C,) predicted IoU
    low_res_logits: np.ndarray  # float32 (C, 256, 256)


def build_decoder_inputs(
    *,
    embedding: np.ndarray,
    orig_size: tuple[int, int],
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    mask_input: np.ndarray | None = None,
    img_size: int = 1024,
) -> dict[str, np.ndarray]:
    """Feed dict for the graph from prompts in original pixels (x, y), laid out as SamPredictor does.

    embedding (1, 256, 64, 64); points (N, 2); labels (N,); box (4,) x0 y0 x1 y1;
    mask_input (1, 1, 256, 256) or (1, 256, 256).
    """
    transform = ResizeLongestSide(img_size)
    coords: list[np.ndarray] = []
    kinds: list[np.ndarray] = []
    if points is not None:
        if labels is None or len(labels) != len(points):
            raise ValueError("labels must be given for every point")
        # float64 scaling, then float32, exactly as SamPredictor converts prompts.
        coords.append(transform.apply_coords(np.asarray(points, dtype=np.float64).reshape(-1, 2), orig_size))
        kinds.append(np.asarray(labels, dtype=np.float64).reshape(-1))
    if box is not None:
        corners = transform.apply_boxes(np.asarray(box, dtype=np.float64).reshape(1, 4), orig_size)
        coords.append(corners.reshape(2, 2))
        kinds.append(np.array([BOX_TOP_LEFT_LABEL, BOX_BOTTOM_RIGHT_LABEL], dtype=np.float64))
    elif points is not None:
        coords.append(np.zeros((1, 2)))
        kinds.append(np.array([PAD_LABEL], dtype=np.float64))
    if not coords:
        raise ValueError("give at least one point or a box")

    if mask_input is None:
        mask = np.zeros((1, 1, 256, 256), dtype=np.float32)
        has_mask = np.zeros(1, dtype=np.float32)
    else:
        mask = np.asarray(mask_input, dtype=np.float32).reshape(1, 1, 256, 256)
        has_mask = np.ones(1, dtype=np.float32)
    return {
        "image_embeddings": np.asarray(embedding, dtype=np.float32).reshape(1, 256, 64, 64),
        "point_coords": np.concatenate(coords).astype(np.float32)[None],
        "point_labels": np.concatenate(kinds).astype(np.float32)[None],
        "mask_input": mask,
        "has_mask_input": has_mask,
        "orig_im_size": np.array(orig_size, dtype=np.float32),
    }


class OnnxDecoder:
    """Runs an exported decoder with onnxruntime (CPU) for prompts in original image pixels."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw graph outputs: masks (1, 4, H, W) logits, iou (1, 4), low-res (1, 4, 256, 256)."""
        masks, iou, low_res = self.session.run(list(OUTPUT_NAMES), feeds)
        return masks, iou, low_res

    def predict(
        self,
        *,
        embedding: np.ndarray,
        orig_size: tuple[int, int],
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
    ) -> DecoderResult:
        """SamPredictor.predict equivalent; C = 3 masks if multimask else 1; orig_size is (H, W)."""
        feeds = build_decoder_inputs(
            embedding=embedding,
            orig_size=orig_size,
            points=points,
            labels=labels,
            box=box,
            mask_input=mask_input,
        )
        masks, iou, low_res = self.run(feeds)
        keep = MULTI_MASK if multimask else SINGLE_MASK
        return DecoderResult(
            masks=masks[0, keep] > 0.0,
            scores=iou[0, keep],
            low_res_logits=low_res[0, keep],
        )
