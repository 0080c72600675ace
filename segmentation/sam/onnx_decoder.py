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

import math
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
from .mask_decoder import MaskDecoder
from .prompt_encoder import BOX_BOTTOM_RIGHT_LABEL, BOX_TOP_LEFT_LABEL, PAD_LABEL
from .registry import ModelSpec, file_sha256
from .sam import Sam
from .transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer
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
    _export_once(path, lambda tmp: export_decoder(model, tmp))
    return path


def _export_once(path: Path, export: Callable[[Path], None]) -> None:
    """Run `export` into a temporary file beside `path` and move it into place, unless `path` exists."""
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        export(Path(tmp_name))
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


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


# --- The interactive pair: a per-image "prepare" graph and a lean "prompt" graph ---------------------
#
# The browser decodes on every pointer move, so it runs the same decoder math split in two and
# rearranged for speed, with only low-res (256x256) logits out:
#
#   prepare  (image_embeddings, mask_input, has_mask_input) -> keys, k_cache, v_cache, q_cache, u_cache
#            everything that depends on the image (and mask prompt) alone: the first transformer
#            layer's projections of the image tokens and the image's share of the output upscaling's
#            first product. Run once per image for hover and first clicks (no mask prompt), once per
#            click when a low-res mask is fed back.
#   prompt   (keys, k_cache, v_cache, q_cache, u_cache, point_coords, point_labels)
#            -> iou_predictions (1, 4), low_res_masks (1, 4, 256, 256), all four mask tokens.
#
# The prompt graph computes the same function as SamDecoderGraph's low-res outputs; only the order of
# operations differs (float rounding aside, which the tests bound):
# - attention between the image (4096 tokens) and the prompt tokens (~7) is re-associated so that
#   nothing projects all 4096 image tokens into q/k/v: scores = (q Wk) x^T instead of q (x Wk)^T,
#   values (P x) Wv instead of P (x Wv), and likewise for the image-to-token direction. That is
#   about half the multiply-adds. A key bias adds the same constant to a whole softmax row, so it
#   is dropped there (softmax is shift-invariant); the image-to-token output bias is spread over the
#   value rows (each head's weights sum to 1), so the residual add rides on the same product.
# - the output upscaling's first product (image tokens x 256x256, the largest in the graph) is folded
#   through the two LayerNorms before it: each normalises a row (x - mean) / std, and the rows are
#   image + a mix of ~56 value rows, so (LN(LN(image + A1 V1) + A2 V2)) W1 is the prepared
#   image @ (g1 g2 W1) plus two thin products A1 (V1 g1 g2 W1), A2 (V2 g2 W1), scaled per row by the
#   LayerNorms' own statistics.
# - the rest of the upscaling (LayerNorm, GELU, the second transposed convolution) is per 64x64 cell,
#   so it runs channels-last as plain matrix products and the final pixel shuffle touches only the
#   four one-channel masks.
# - the full-resolution upscale is left out: the caller upsamples the one mask it keeps (see
#   static/js/upscale.js, which follows SamPredictor's postprocess_masks exactly).

INTERACTIVE_FORMAT_VERSION = 4
# The upscaling's last GELU (65536 x 32 values) in tanh form: in onnxruntime-web the exact (erf) GELU
# is the single most expensive step of the prompt graph (~9 ms of ~60 on 2 threads in Chromium: wasm
# has no vector erf), the tanh form ~3 ms. There it costs almost nothing in exactness (worst fixture
# mask IoU 0.9995 against Meta's); the first GELU stays exact, its error would pass through the
# second transposed convolution (tanh there too: 0.9979). See benchmarks/RESULTS.md, "Browser".
UPSCALE_GELU = ("none", "tanh")
INTERACTIVE_OPSET = 20  # the first with a GELU operator (tanh form included)
PREPARE_INPUTS = ("image_embeddings", "mask_input", "has_mask_input")
PREPARE_OUTPUTS = ("keys", "k_cache", "v_cache", "q_cache", "u_cache")
PROMPT_INPUTS = (*PREPARE_OUTPUTS, "point_coords", "point_labels")
PROMPT_OUTPUTS = ("iou_predictions", "low_res_masks")
INTERACTIVE_GRAPHS = ("prepare", "prompt")


# Every reshape below names its sizes as Python ints (from the module's layers) and leaves only the
# token count as -1: a size read off a tensor traces into Shape/Gather/Concat nodes that onnxruntime
# runs on every decode (~200 of them, ~2 ms in the browser).


def _dims(att: Attention) -> tuple[int, int, int]:
    """(heads, head width, embedding width) of an attention, as Python ints."""
    internal = int(att.q_proj.out_features)
    return att.num_heads, internal // att.num_heads, int(att.q_proj.in_features)


def _heads(x: torch.Tensor, heads: int, width: int) -> torch.Tensor:
    """(T, heads * width) -> (heads, T, width)."""
    return x.reshape(-1, heads, width).transpose(0, 1)


def _merge_heads(x: torch.Tensor, width: int) -> torch.Tensor:
    """(heads, T, d) -> (T, width = heads * d)."""
    return x.transpose(0, 1).reshape(-1, width)


def _self_attention(att: Attention, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
    """Attention.forward on (T, C) tokens, in the same order of operations."""
    h, d, _ = _dims(att)
    q, k, v = (_heads(proj(x), h, d) for proj, x in ((att.q_proj, q_in), (att.k_proj, k_in), (att.v_proj, v_in)))
    attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1)
    return att.out_proj(_merge_heads(attn @ v, h * d))


class _LayerNormWithStats(torch.autograd.Function):
    """LayerNorm over the last axis that also returns each row's mean and 1 / std.

    Exported as one LayerNormalization node with its optional Mean and InvStdDev outputs, so the
    statistics cost nothing extra.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # type: ignore[no-untyped-def, override]
        mean = x.mean(-1, keepdim=True)
        inv_std = torch.rsqrt(((x - mean) ** 2).mean(-1, keepdim=True) + eps)
        return (x - mean) * inv_std * weight + bias, mean, inv_std

    @staticmethod
    def symbolic(g, x, weight, bias, eps):  # type: ignore[no-untyped-def]
        return g.op("LayerNormalization", x, weight, bias, axis_i=-1, epsilon_f=eps, outputs=3)


@dataclass(frozen=True)
class _ImageUpdate:
    """An image-to-token attention's update of the image rows, z = rows + weights @ values, and the
    LayerNorm after it: keys = LN(z) with z's row mean and 1 / std."""

    weights: torch.Tensor  # (N, heads * T), each head's T weights sum to 1
    values: torch.Tensor  # (heads * T, C), out_proj applied, out_proj bias / heads included
    mean: torch.Tensor  # (N, 1)
    inv_std: torch.Tensor  # (N, 1)


def _token_to_image(att: Attention, q_in: torch.Tensor, xk: torch.Tensor, xv: torch.Tensor) -> torch.Tensor:
    """Attention(q=tokens (T, C), k=image xk (N, C), v=image xv (N, C)) -> (T, C), re-associated."""
    h, d, c = _dims(att)
    q = _heads(att.q_proj(q_in), h, d)  # (h, T, d)
    qk = (q @ att.k_proj.weight.reshape(h, d, c)).reshape(-1, c)  # (h*T, C)
    scores = F.linear(qk, xk) / math.sqrt(d)  # (h*T, N); the k bias is a per-row constant
    pv = (torch.softmax(scores, dim=-1) @ xv).reshape(h, -1, c)  # (h, T, C)
    out = pv @ att.v_proj.weight.reshape(h, d, c).transpose(1, 2) + att.v_proj.bias.reshape(h, 1, d)
    return att.out_proj(_merge_heads(out, h * d))


def _token_to_image_cached(att: Attention, q_in: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """As _token_to_image with the image side already projected: k (h, d, N), v (h, N, d)."""
    h, d, _ = _dims(att)
    q = _heads(att.q_proj(q_in), h, d)
    attn = torch.softmax(q @ k / math.sqrt(d), dim=-1)
    return att.out_proj(_merge_heads(attn @ v, h * d))


def _image_to_token_out(
    att: Attention, attn: torch.Tensor, v_in: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """attn (N, h, T) weights over the tokens v_in (T, C) -> rows + out_proj(attn @ v) as
    rows + attn @ (v Wo + bias / h), and the (weights (N, h*T), values (h*T, C)) of that product."""
    h, d, c = _dims(att)
    v = _heads(att.v_proj(v_in), h, d)  # (h, T, d)
    wo = att.out_proj.weight.reshape(c, h, d).permute(1, 2, 0)  # (h, d, C)
    values = (v @ wo).reshape(-1, c) + att.out_proj.bias / h  # (h*T, C)
    weights = attn.flatten(1)
    return weights @ values + rows, weights, values


def _image_to_token(
    att: Attention, xq: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention(q=image xq (N, C), k=tokens k_in (T, C), v=tokens v_in (T, C)) added to `rows`, re-associated."""
    h, d, c = _dims(att)
    k = _heads(att.k_proj(k_in), h, d)  # (h, T, d)
    qk = (k @ att.q_proj.weight.reshape(h, d, c)).reshape(-1, c)  # (h*T, C)
    bias = (k @ att.q_proj.bias.reshape(h, d, 1)).reshape(-1)  # (h*T,)
    scores = (F.linear(xq, qk) + bias) / math.sqrt(d)  # (N, h*T)
    attn = torch.softmax(scores.unflatten(1, (h, -1)), dim=-1)
    return _image_to_token_out(att, attn, v_in, rows)


def _image_to_token_cached(
    att: Attention, q: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As _image_to_token with the image queries already projected: q (h, N, d)."""
    h, d, _ = _dims(att)
    k = _heads(att.k_proj(k_in), h, d)  # (h, T, d)
    scores = (q @ k.transpose(1, 2) / math.sqrt(d)).permute(1, 0, 2)  # (N, h, T)
    return _image_to_token_out(att, torch.softmax(scores, dim=-1), v_in, rows)


def _upscale_first_weight(decoder: MaskDecoder) -> tuple[torch.Tensor, torch.Tensor]:
    """The output upscaling's first ConvTranspose2d(k=2, s=2) as a (C, 4 * mid) matrix and bias: each
    64x64 cell becomes a 2x2 block of `mid` channels."""
    conv = cast(nn.ConvTranspose2d, decoder.output_upscaling[0])
    return conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, -1), cast(torch.Tensor, conv.bias).repeat(4)


def _upscale_first_folded(decoder: MaskDecoder) -> tuple[torch.Tensor, torch.Tensor]:
    """(G2 W1, G1 G2 W1): the first upscaling weight with the gains of the LayerNorms before it folded
    in (G = diag(gamma)); the prepare graph applies the second to the image, the prompt graph both."""
    norm1, norm2 = _image_norms(decoder)
    w1, _ = _upscale_first_weight(decoder)
    w2 = norm2.weight[:, None] * w1
    return w2, norm1.weight[:, None] * w2


def _image_norms(decoder: MaskDecoder) -> tuple[nn.LayerNorm, nn.LayerNorm]:
    """The LayerNorms after each layer's image-to-token attention (the model has two layers)."""
    layers = [cast(TwoWayAttentionBlock, layer) for layer in cast(TwoWayTransformer, decoder.transformer).layers]
    if len(layers) != 2:
        raise ValueError("the interactive graphs are written for SAM's two-layer transformer")
    return layers[0].norm4, layers[1].norm4


class SamPrepareGraph(nn.Module):
    """Image (and mask prompt) -> what the prompt graph needs of the image. See the section comment."""

    key_pe: torch.Tensor

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.decoder = model.mask_decoder
        self.layer = cast(TwoWayAttentionBlock, model.mask_decoder.transformer.layers[0])
        self.register_buffer("key_pe", model.prompt_encoder.get_dense_pe().flatten(2)[0].T.contiguous())

    def forward(
        self, image_embeddings: torch.Tensor, mask_input: torch.Tensor, has_mask_input: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """-> keys (N, C) the image tokens, k_cache (h, d, N), v_cache (h, N, d), q_cache (h, N, d),
        u_cache (N, 4 * mid): keys @ (g1 g2 W1), the image's share of the upscaling's first product."""
        dense = has_mask_input * self.prompt_encoder.embed_masks(mask_input)
        dense = dense + (1 - has_mask_input) * self.prompt_encoder.no_mask_dense(1)
        keys = (image_embeddings + dense).flatten(2)[0].T  # (N, C)
        x = keys + self.key_pe
        t2i, i2t = self.layer.cross_attn_token_to_image, self.layer.cross_attn_image_to_token
        h, d, _ = _dims(t2i)
        k = _heads(t2i.k_proj(x), h, d).transpose(1, 2)
        v = _heads(t2i.v_proj(keys), h, d)
        h, d, _ = _dims(i2t)
        q = _heads(i2t.q_proj(x), h, d)
        _, w12 = _upscale_first_folded(self.decoder)
        return keys, k, v, q, keys @ w12


class SamPromptGraph(nn.Module):
    """Prepared image + prompts -> (iou_predictions (1, 4), low_res_masks (1, 4, 256, 256))."""

    key_pe: torch.Tensor

    def __init__(self, model: Sam, gelu: tuple[str, str] = UPSCALE_GELU) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.decoder = model.mask_decoder
        self.gelu = gelu  # F.gelu's `approximate` for the upscaling's two GELUs
        self.register_buffer("key_pe", model.prompt_encoder.get_dense_pe().flatten(2)[0].T.contiguous())

    def _block(
        self,
        i: int,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, _ImageUpdate]:
        """TwoWayAttentionBlock.forward on 2-D tensors (see transformer.py for the reference order)."""
        layer = cast(TwoWayAttentionBlock, self.decoder.transformer.layers[i])
        if layer.skip_first_layer_pe:
            queries = _self_attention(layer.self_attn, queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + _self_attention(layer.self_attn, q, q, queries)
        queries = layer.norm1(queries)
        q = queries + query_pe
        xk = keys + self.key_pe
        if cache is None:
            attn = _token_to_image(layer.cross_attn_token_to_image, q, xk, keys)
        else:
            attn = _token_to_image_cached(layer.cross_attn_token_to_image, q, cache[0], cache[1])
        queries = layer.norm2(queries + attn)
        queries = layer.norm3(queries + layer.mlp(queries))
        q = queries + query_pe
        if cache is None:
            z, weights, values = _image_to_token(layer.cross_attn_image_to_token, xk, q, queries, keys)
        else:
            z, weights, values = _image_to_token_cached(layer.cross_attn_image_to_token, cache[2], q, queries, keys)
        norm = layer.norm4
        keys, mean, inv_std = _LayerNormWithStats.apply(z, norm.weight, norm.bias, norm.eps)
        return queries, keys, _ImageUpdate(weights, values, mean, inv_std)

    def _upscale_first(self, u_cache: torch.Tensor, first: _ImageUpdate, second: _ImageUpdate) -> torch.Tensor:
        """keys2 @ W1 + b1 without the (N, C) x (C, 4 * mid) product, see the section comment.

        With z1 = keys0 + A1 V1, keys1 = LN1(z1), z2 = keys1 + A2 V2, keys2 = LN2(z2), G = diag(gamma):
          keys2 W1 = r2 (z2 - m2) G2 W1 + beta2 W1
          z2 G2 W1 = r1 (z1 - m1) G1 G2 W1 + beta1 G2 W1 + A2 (V2 G2 W1)
          z1 G1 G2 W1 = u_cache + A1 (V1 G1 G2 W1)
        with m, r each row's mean and 1 / std. A row's weights sum to `heads`, so a constant row is
        added to every value row / heads; the mean and std terms ride along as extra columns.
        """
        norm1, norm2 = _image_norms(self.decoder)
        transformer = cast(TwoWayTransformer, self.decoder.transformer)
        heads = cast(TwoWayAttentionBlock, transformer.layers[0]).cross_attn_image_to_token.num_heads
        w1, b1 = _upscale_first_weight(self.decoder)
        w2, w12 = _upscale_first_folded(self.decoder)
        values1 = torch.cat([first.values @ w12, -w12.sum(0, keepdim=True)])
        u1 = torch.cat([first.weights, first.mean], dim=1) @ values1 + u_cache  # (z1 - m1) G1 G2 W1
        constant = norm1.bias @ w2
        bias = (norm2.bias @ w1 + b1)[None]
        values2 = torch.cat([second.values @ w2 + constant / heads, -w2.sum(0, keepdim=True), bias])
        u2 = torch.cat([second.weights, second.mean, 1 / second.inv_std], dim=1) @ values2 + first.inv_std * u1
        return second.inv_std * u2

    def _upscale_masks(self, y1: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """The rest of output_upscaling from its first product y1 (N, 4 * mid), then the hypernetwork
        product, channels-last per 64x64 cell -> (1, M, 256, 256)."""
        _, norm, _, conv2, _ = self.decoder.output_upscaling
        conv2, norm = cast(nn.ConvTranspose2d, conv2), cast(LayerNorm2d, norm)
        side = self.prompt_encoder.image_embedding_size[0]
        mid, out = int(conv2.in_channels), int(conv2.out_channels)  # Python ints: static shapes in ONNX
        first, second = self.gelu
        x = F.gelu(F.layer_norm(y1.reshape(-1, mid), (mid,), norm.weight, norm.bias, norm.eps), approximate=first)
        # ConvTranspose2d(k=2, s=2) weight (in, out, a, b): each cell becomes a 2x2 block of `out`.
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(-1, 4 * out)
        x = F.gelu((x @ w2 + cast(torch.Tensor, conv2.bias).repeat(4)).reshape(-1, out), approximate=second)
        masks = (x @ hyper.T).reshape(side, side, 2, 2, 2, 2, -1)  # (i, j, a, b, c, d, mask)
        # Pixel (4i + 2a + c, 4j + 2b + d) of each mask.
        return masks.permute(6, 0, 2, 4, 1, 3, 5).reshape(1, -1, side * 4, side * 4)

    def forward(
        self,
        keys: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        q_cache: torch.Tensor,
        u_cache: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shapes as SamPrepareGraph's outputs and the main contract's point inputs."""
        decoder = self.decoder
        sparse = self.prompt_encoder.embed_points(point_coords, point_labels)[0]
        tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight, sparse], dim=0)
        queries, keys, first = self._block(0, tokens, keys, tokens, (k_cache, v_cache, q_cache))
        queries, keys, second = self._block(1, queries, keys, tokens, None)
        attn = _token_to_image(
            decoder.transformer.final_attn_token_to_image, queries + tokens, keys + self.key_pe, keys
        )
        queries = decoder.transformer.norm_final_attn(queries + attn)

        iou = decoder.iou_prediction_head(queries[0])[None]
        mask_tokens = queries[1 : 1 + decoder.num_mask_tokens]
        hyper = torch.stack([mlp(mask_tokens[i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)])
        return iou, self._upscale_masks(self._upscale_first(u_cache, first, second), hyper)


def _export(module: nn.Module, args: tuple, path: Path, inputs: tuple, outputs: tuple, dynamic: dict) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            dynamo=False,
            opset_version=INTERACTIVE_OPSET,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )


def export_interactive(model: Sam, graph: str, path: Path, gelu: tuple[str, str] = UPSCALE_GELU) -> None:
    """Write the interactive `graph` ("prepare" or "prompt") of `model` to `path`; `gelu` as SamPromptGraph's."""
    example = _example_inputs()
    prepare = SamPrepareGraph(model).eval()
    if graph == "prepare":
        _export(prepare, (example[0], example[3], example[4]), path, PREPARE_INPUTS, PREPARE_OUTPUTS, {})
    elif graph == "prompt":
        with torch.no_grad():
            cache = prepare(example[0], example[3], example[4])
        points = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
        _export(SamPromptGraph(model, gelu), (*cache, *example[1:3]), path, PROMPT_INPUTS, PROMPT_OUTPUTS, points)
    else:
        raise ValueError(f"unknown interactive graph {graph!r}")


def interactive_onnx_path(spec: ModelSpec, cache_dir: Path, graph: str, checkpoint_sha256: str | None = None) -> Path:
    """Cache file name of an interactive graph, named like decoder_onnx_path."""
    if graph not in INTERACTIVE_GRAPHS:
        raise ValueError(f"unknown interactive graph {graph!r}")
    sha = checkpoint_sha256 or spec.checkpoint_sha256
    if not sha:
        raise ValueError(f"{spec.key}: the checkpoint sha256 is needed to name the decoder cache file")
    return cache_dir / f"{spec.key}.{graph}.{sha[:16]}.v{INTERACTIVE_FORMAT_VERSION}.onnx"


def ensure_interactive_onnx(spec: ModelSpec, model: Sam, checkpoint_path: Path, cache_dir: Path, graph: str) -> Path:
    """As ensure_decoder_onnx, for the interactive `graph` ("prepare" or "prompt")."""
    sha = spec.checkpoint_sha256 or file_sha256(checkpoint_path)
    path = interactive_onnx_path(spec, cache_dir, graph, sha)
    _export_once(path, lambda tmp: export_interactive(model, graph, tmp))
    return path
