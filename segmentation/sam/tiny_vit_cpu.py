"""MobileSAM's TinyViT encoder as a fused, inference-only CPU forward pass built on oneDNN kernels.

`FusedTinyViTCPU(encoder)` takes a loaded `tiny_vit.TinyViTEncoder` and computes the same function,
(B, 3, 1024, 1024) normalised image -> (B, 256, 64, 64) float32 embedding, faster on a CPU: about 1.4x
the module and 2.3x the official MobileSAM encoder on the 2-core machine of benchmarks/RESULTS.md
("Encoder"). In float32 it is the same arithmetic up to summation order (max abs diff ~3e-6 on the real
checkpoint, against a 1e-3 parity tolerance). What it changes, and why:

* BatchNorm is folded into the preceding convolution once, at build time (the module version folds
  on every call so that its parameters stay exactly the checkpoint's).
* Conv+GELU, conv+residual add, linear+GELU and linear+residual add each run as one oneDNN kernel with
  a post-op (`torch.ops.mkldnn._convolution_pointwise` / `_linear_pointwise`, the kernels PyTorch's
  Inductor emits for CPU): the activation is applied while the output tile is still in cache instead
  of in a second pass over a tensor of up to 64 MB.
* The stride-4 convolutional stem (patch embedding, the two MBConv blocks and the first patch merging,
  all at 256x256 or more) runs in horizontal bands of rows, recomputing a one-row halo per 3x3 conv.
  The 64 MB intermediates of the unbanded version are larger than glibc's mmap threshold (32 MB max),
  so each is a fresh mmap that is page-faulted in on every call; on the 2-core VM this was measured
  on, those faults cost more than the convolutions themselves. Bands of ~4 MB are reused from the
  heap and stay in cache. The MLPs run in chunks of tokens for the same reason.
* Everything is channels-last: a (B, C, H, W) channels-last tensor and the (B, H, W, C) token grid
  the attention blocks use are the same memory, so no layout copies happen between stages.
* Attention uses SDPA's fused CPU kernel with the (1, heads, T, T) bias as its mask.

`dtype=torch.bfloat16` stores weights and activations in bfloat16 (oneDNN uses AMX / AVX512-BF16 where
the CPU has them) while LayerNorm statistics are computed in float32 (mixed-type layer_norm with
float32 affine parameters). It is not exact: see benchmarks/RESULTS.md for its mask IoU.

Images of a batch are encoded one after another: on a CPU the GEMMs are already large per image
(>= 4096 rows), and one image at a time keeps the working set small.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import tiny_vit as tv
from .common import LayerNorm2d

# Target size of the largest intermediate of one band / chunk: far below glibc's 32 MB mmap threshold
# and small enough to stay in the last-level cache.
BAND_BYTES = 4 << 20
CHUNK_BYTES = 16 << 20


def fused_cpu_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this PyTorch build has the oneDNN fused kernels (and bfloat16 support, for bfloat16)."""
    try:
        ops = torch.ops.mkldnn
        _ = (ops._convolution_pointwise, ops._linear_pointwise)
    except (AttributeError, RuntimeError):
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


class _Conv:
    """A convolution (BatchNorm folded in) with optional fused GELU or residual add; channels-last."""

    def __init__(self, module: tv.Conv2dBN | torch.nn.Conv2d, dtype: torch.dtype) -> None:
        if isinstance(module, tv.Conv2dBN):
            conv, bn = module.c, module.bn
            assert bn.running_mean is not None and bn.running_var is not None
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C_out,)
            weight = conv.weight * scale[:, None, None, None]
            bias: torch.Tensor | None = bn.bias - bn.running_mean * scale
        else:
            conv, weight, bias = module, module.weight, module.bias
        self.weight = weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        self.bias = None if bias is None else bias.detach().to(dtype).contiguous()
        self.kernel = int(conv.kernel_size[0])
        self.stride = [int(s) for s in conv.stride]
        self.padding = [int(p) for p in conv.padding]  # type: ignore[union-attr]
        self.groups = int(conv.groups)
        self.out_channels = int(conv.out_channels)

    def out_size(self, size: int) -> int:
        return (size + 2 * self.padding[0] - self.kernel) // self.stride[0] + 1

    def __call__(
        self, x: torch.Tensor, *, gelu: bool = False, add: torch.Tensor | None = None, row_padding: int | None = None
    ) -> torch.Tensor:
        """(B, C_in, H, W) channels-last -> (B, C_out, H', W') channels-last.

        gelu: GELU (erf form, as nn.GELU) on the output. add: a tensor of the output's shape added to it
        (the residual). row_padding overrides the vertical zero padding (the banded stem pads by hand).
        """
        if gelu and add is not None:
            raise ValueError("oneDNN cannot fuse GELU after a residual add")
        padding = self.padding if row_padding is None else [row_padding, self.padding[1]]
        args = (self.weight, self.bias, padding, self.stride, [1, 1], self.groups)
        if add is not None:
            return torch.ops.mkldnn._convolution_pointwise(x, add, *args, "add", 1.0, None, [], None)
        if gelu:
            return torch.ops.mkldnn._convolution_pointwise(x, *args, "gelu", [None], "none")
        return torch.ops.mkldnn._convolution_pointwise(x, *args, "none", [], "")


_Step = tuple[_Conv, bool]  # a convolution and whether GELU follows it


def _chain_rows(
    x: torch.Tensor, steps: list[_Step], heights: list[int], a: int, b: int, add: torch.Tensor | None = None
) -> torch.Tensor:
    """Output rows [a, b) of the conv chain `steps` applied to x, computing only the rows they need.

    heights[i] is the input height of steps[i]. Rows outside the image are the convs' zero padding, so
    they are added explicitly where a band touches the top or bottom edge. `add` (rows [a, b) of a
    residual) is fused into the last conv.
    """
    if not steps:
        return x[:, :, a:b]
    conv, gelu = steps[-1]
    h_in = heights[len(steps) - 1]
    lo = a * conv.stride[0] - conv.padding[0]
    hi = (b - 1) * conv.stride[0] - conv.padding[0] + conv.kernel
    lo_in, hi_in = max(lo, 0), min(hi, h_in)
    rows = _chain_rows(x, steps[:-1], heights, lo_in, hi_in)
    if lo_in - lo or hi - hi_in:
        rows = F.pad(rows, (0, 0, lo_in - lo, hi - hi_in))
    return conv(rows, gelu=gelu, add=add, row_padding=0)


def _banded(x: torch.Tensor, steps: list[_Step], residual: bool = False) -> torch.Tensor:
    """The conv chain `steps` on one image x (1, C, H, W) channels-last, computed in bands of output rows.

    With residual, x is added to the last conv's output (the chain must keep x's shape).
    """
    heights, widths = [x.shape[2]], [x.shape[3]]
    for conv, _ in steps:
        heights.append(conv.out_size(heights[-1]))
        widths.append(conv.out_size(widths[-1]))
    # Bytes of each intermediate per output row of the chain; the largest sets the band height.
    row_bytes, rows_per_out = [], 1
    for i in range(len(steps) - 1, -1, -1):
        row_bytes.append(steps[i][0].out_channels * widths[i + 1] * x.element_size() * rows_per_out)
        rows_per_out *= steps[i][0].stride[0]
    band = max(1, BAND_BYTES // max(row_bytes))
    out_h = heights[-1]
    bands = [
        _chain_rows(x, steps, heights, a, min(a + band, out_h), add=x[:, :, a : a + band] if residual else None)
        for a in range(0, out_h, band)
    ]
    return bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)


class _Block:
    """One TinyViT block (windowed attention, depthwise local conv, MLP) on (1, H, W, C) tokens."""

    def __init__(self, block: tv.TinyViTBlock, dtype: torch.dtype) -> None:
        attn, mlp = block.attn, block.mlp
        self.window = block.window_size
        self.heads = attn.num_heads
        self.head_dim = attn.head_dim
        # LayerNorm affine parameters stay float32: with bfloat16 activations layer_norm then runs as a
        # mixed-type kernel whose statistics are float32.
        self.norm1 = (attn.norm.weight.detach().float(), attn.norm.bias.detach().float(), attn.norm.eps)
        self.norm2 = (mlp.norm.weight.detach().float(), mlp.norm.bias.detach().float(), mlp.norm.eps)
        self.qkv = (attn.qkv.weight.detach().to(dtype), attn.qkv.bias.detach().to(dtype))
        self.proj = (attn.proj.weight.detach().to(dtype), attn.proj.bias.detach().to(dtype))
        self.fc1 = (mlp.fc1.weight.detach().to(dtype), mlp.fc1.bias.detach().to(dtype))
        self.fc2 = (mlp.fc2.weight.detach().to(dtype), mlp.fc2.bias.detach().to(dtype))
        # Gathered once: (1, heads, T, T); 4-D so SDPA takes its fused kernel.
        self.bias = attn.attention_biases[:, attn.attention_bias_idxs].detach().unsqueeze(0).to(dtype).contiguous()
        self.local_conv = _Conv(block.local_conv, dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(1, H, W, C) contiguous -> (1, H, W, C) contiguous."""
        b, h, w, c = x.shape
        ws = self.window
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        # Zero-pad before the LayerNorm, as TinyViT does (see tiny_vit.TinyViTBlock._windowed_attention).
        padded = F.pad(x, (0, 0, 0, pad_r, 0, pad_b)) if pad_b or pad_r else x
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        windows = padded.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        windows = F.layer_norm(windows, (c,), self.norm1[0], self.norm1[1], self.norm1[2])
        n, t = windows.shape[:2]
        qkv = F.linear(windows, *self.qkv).view(n, t, self.heads, 3, self.head_dim)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # each (n, heads, T, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        # Back to the padded grid, crop, then the projection with the residual add fused in: projecting
        # after the crop also skips the padding tokens, whose outputs would be thrown away.
        out = out.transpose(1, 2).reshape(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        out = out[:, :h, :w].reshape(b * h * w, c)
        x = torch.ops.mkldnn._linear_pointwise(out, x.reshape(b * h * w, c), *self.proj, "add").view(b, h, w, c)
        # The NCHW view of the (B, H, W, C) tokens is channels-last: no copy either way.
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        tokens = x.reshape(b * h * w, c)
        chunk = max(1, CHUNK_BYTES // (self.fc1[0].shape[0] * x.element_size()))
        parts = []
        for i in range(0, tokens.shape[0], chunk):
            part = tokens[i : i + chunk]
            hidden = F.layer_norm(part, (c,), self.norm2[0], self.norm2[1], self.norm2[2])
            hidden = torch.ops.mkldnn._linear_pointwise(hidden, *self.fc1, "gelu", [None], "none")
            parts.append(torch.ops.mkldnn._linear_pointwise(hidden, part, *self.fc2, "add"))
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).view(b, h, w, c)


def _steps(*convs: tuple[tv.Conv2dBN, bool], dtype: torch.dtype) -> list[_Step]:
    return [(_Conv(conv, dtype), gelu) for conv, gelu in convs]


def _merging(merge: tv.PatchMerging, dtype: torch.dtype) -> list[_Step]:
    return _steps((merge.conv1, True), (merge.conv2, True), (merge.conv3, False), dtype=dtype)


def _run(x: torch.Tensor, steps: list[_Step]) -> torch.Tensor:
    for conv, gelu in steps:
        x = conv(x, gelu=gelu)
    return x


class FusedTinyViTCPU:
    """Inference-only TinyViT encoder for the CPU; see the module docstring.

    Built from a loaded `TinyViTEncoder` (weights are copied; the encoder is not modified).
    Call with (B, 3, img_size, img_size) normalised float -> (B, 256, img_size/16, img_size/16) float32.
    """

    def __init__(self, encoder: tv.TinyViTEncoder, dtype: torch.dtype = torch.float32) -> None:
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be float32 or bfloat16, got {dtype}")
        if not fused_cpu_available(dtype):
            raise RuntimeError(f"this PyTorch build lacks the oneDNN kernels for a fused {dtype} TinyViT")
        self.dtype = dtype
        self.img_size = encoder.img_size
        self.in_channels = encoder.in_channels
        seq = encoder.patch_embed.seq
        assert isinstance(seq[0], tv.Conv2dBN) and isinstance(seq[2], tv.Conv2dBN)
        self.patch_embed = _steps((seq[0], True), (seq[2], False), dtype=dtype)
        conv_stage = encoder.layers[0]
        assert isinstance(conv_stage, tv.ConvStage)
        self.mbconvs: list[list[_Step]] = []
        for mb in conv_stage.blocks:
            assert isinstance(mb, tv.MBConv)
            self.mbconvs.append(_steps((mb.conv1, True), (mb.conv2, True), (mb.conv3, False), dtype=dtype))
        assert isinstance(conv_stage.downsample, tv.PatchMerging)
        self.first_merge = _merging(conv_stage.downsample, dtype)
        self.stages: list[tuple[list[_Block], list[_Step] | None]] = []
        for stage in encoder.layers[1:]:
            assert isinstance(stage, tv.AttentionStage)
            blocks = [_Block(blk, dtype) for blk in stage.blocks if isinstance(blk, tv.TinyViTBlock)]
            down = stage.downsample
            self.stages.append((blocks, _merging(down, dtype) if isinstance(down, tv.PatchMerging) else None))
        neck = encoder.neck
        assert isinstance(neck[0], torch.nn.Conv2d) and isinstance(neck[2], torch.nn.Conv2d)
        assert isinstance(neck[1], LayerNorm2d) and isinstance(neck[3], LayerNorm2d)
        self.neck_convs = (_Conv(neck[0], dtype), _Conv(neck[2], dtype))
        self.neck_norms = [(m.weight.detach().float(), m.bias.detach().float(), m.eps) for m in (neck[1], neck[3])]

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, img_size, img_size) -> (B, 256, img_size/16, img_size/16) float32, contiguous."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"expected (B, {self.in_channels}, {self.img_size}, {self.img_size}), got {tuple(x.shape)}"
            )
        return torch.cat([self._forward_one(x[i : i + 1]) for i in range(x.shape[0])])

    def _forward_one(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, S, S) -> (1, 256, S/16, S/16) float32."""
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        x = _banded(x, self.patch_embed)  # (1, 64, S/4, S/4)
        for steps in self.mbconvs:
            x = _banded(x, steps, residual=True)
            # MBConv's final GELU comes after the residual add, which oneDNN cannot fuse with GELU.
            torch.ops.aten.gelu_(x)
        x = _banded(x, self.first_merge)  # (1, 128, S/8, S/8)
        for blocks, merge in self.stages:
            tokens = x.permute(0, 2, 3, 1)  # (1, H, W, C), same memory
            for block in blocks:
                tokens = block(tokens)
            x = tokens.permute(0, 3, 1, 2)
            if merge is not None:
                x = _run(x, merge)
        for conv, (weight, bias, eps) in zip(self.neck_convs, self.neck_norms, strict=True):
            # LayerNorm2d over channels = layer_norm over the last axis of the channels-last token view.
            tokens = F.layer_norm(conv(x).permute(0, 2, 3, 1), (weight.shape[0],), weight, bias, eps)
            x = tokens.permute(0, 3, 1, 2)
        return x.to(torch.float32).contiguous()
