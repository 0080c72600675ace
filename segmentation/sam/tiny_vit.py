"""MobileSAM's image encoder: TinyViT-5M with SAM's 256-channel neck, for inference.

MobileSAM (Zhang et al., 2023, "Faster Segment Anything") replaces SAM's ViT-H image encoder with a
TinyViT-5M (Wu et al., 2022, "TinyViT: Fast Pretraining Distillation for Small Vision Transformers")
distilled to produce SAM's image embedding: (B, 3, 1024, 1024) normalised pixels in, (B, 256, 64, 64)
embedding out, so SAM's prompt encoder and mask decoder work on it unchanged.

Architecture (MobileSAM's TinyViT-5M config):

* patch embedding: two stride-2 3x3 Conv+BN (GELU between) -> 64 channels at 1/4 resolution (256x256);
* stage 0: 2 MBConv blocks (inverted residual, expand ratio 4), then a PatchMerging to 128 ch, 128x128;
* stage 1: 2 attention blocks, 4 heads, 7x7 windows, then PatchMerging to 160 ch, 64x64;
* stage 2: 6 attention blocks, 5 heads, 14x14 windows, then PatchMerging to 320 ch with stride 1:
  MobileSAM keeps 64x64 here (plain TinyViT halves again) because SAM's decoder needs a 64x64 grid;
* stage 3: 2 attention blocks, 10 heads, 7x7 windows, 320 ch at 64x64;
* neck (as in SAM's ViT encoder): 1x1 conv to 256, LayerNorm2d, 3x3 conv, LayerNorm2d.

An attention block is: x + WindowAttention(x) (pre-norm, learned relative-position biases per head),
then a depthwise 3x3 Conv+BN *without* a residual, then x + MLP(x) (pre-norm, GELU).

Module and parameter names follow the released checkpoint, so `state_dict()` equals the checkpoint's
`image_encoder.*` entries with the prefix removed and loads with `strict=True`. The checkpoint also
carries TinyViT's ImageNet classifier (`norm_head`, `head`): MobileSAM never uses it, but the modules
exist here so that strict loading accounts for every key.

Drop rates are 0 in MobileSAM, so there is no dropout or stochastic depth: this is inference code
(training mode only changes how BatchNorm behaves).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d

# MobileSAM's TinyViT-5M configuration.
IMG_SIZE = 1024
EMBED_DIMS = (64, 128, 160, 320)
DEPTHS = (2, 2, 6, 2)
NUM_HEADS = (2, 4, 5, 10)
WINDOW_SIZES = (7, 7, 14, 7)
MLP_RATIO = 4.0
MBCONV_EXPAND_RATIO = 4.0
LOCAL_CONV_SIZE = 3
NECK_CHANNELS = 256
NUM_CLASSES = 1000  # unused ImageNet head kept only because the checkpoint contains it


class Conv2dBN(nn.Module):
    """Bias-free Conv2d followed by BatchNorm2d (submodules `c` and `bn`, as in the checkpoint).

    In eval mode the BatchNorm is folded into the convolution's weight and bias on every call: it is an
    affine map per output channel, so conv-then-BN equals one conv with rescaled weights. This saves a
    full pass over the (often large) activation and costs only a few small weight-sized operations,
    while the stored parameters stay exactly the checkpoint's.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        if self.training:
            return self.bn(self.c(x))
        bn = self.bn
        assert bn.running_mean is not None and bn.running_var is not None
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C_out,)
        weight = self.c.weight * scale[:, None, None, None]
        bias = bn.bias - bn.running_mean * scale
        return F.conv2d(x, weight, bias, self.c.stride, self.c.padding, self.c.dilation, self.c.groups)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 Conv+BN with GELU between: (B, 3, H, W) -> (B, embed_dim, H/4, W/4)."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        # Indices 0 and 2 carry weights (GELU at 1 has none), matching the checkpoint's `seq.0`/`seq.2`.
        self.seq = nn.Sequential(
            Conv2dBN(in_channels, embed_dim // 2, 3, stride=2, padding=1),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, 3, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block (MobileNetV2 style) used in TinyViT's first, convolutional stage.

    1x1 expand, depthwise 3x3, 1x1 project, GELU after each of the first two, then the residual sum
    followed by a final GELU. Shape-preserving: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv1 = Conv2dBN(channels, hidden, 1)
        self.conv2 = Conv2dBN(hidden, hidden, 3, padding=1, groups=hidden)
        self.conv3 = Conv2dBN(hidden, channels, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        y = self.conv3(y)
        return self.act(x + y)


class PatchMerging(nn.Module):
    """Downsampling between stages: 1x1 conv, depthwise 3x3 conv (stride 2, or 1), 1x1 conv.

    (B, C_in, H, W) -> (B, C_out, H/stride, W/stride). GELU after the first two convs only.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = Conv2dBN(in_channels, out_channels, 1)
        self.conv2 = Conv2dBN(out_channels, out_channels, 3, stride=stride, padding=1, groups=out_channels)
        self.conv3 = Conv2dBN(out_channels, out_channels, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


def relative_offset_index(window_size: int) -> torch.Tensor:
    """Index into the per-head bias table for every (query, key) pair of tokens in one window.

    Tokens are numbered row-major. TinyViT learns one bias per head for each *absolute* offset
    (|dy|, |dx|) between two tokens, so a window of size w has w*w distinct offsets; the table column
    of offset (|dy|, |dx|) is |dy| * w + |dx| (the order in which TinyViT first meets the offsets when
    it scans all pairs starting from token (0, 0)).

    Returns a (w*w, w*w) int64 tensor.
    """
    coords = torch.arange(window_size)
    rows = coords.repeat_interleave(window_size)  # (w*w,) row of each token
    cols = coords.repeat(window_size)  # (w*w,) column of each token
    d_rows = (rows[:, None] - rows[None, :]).abs()
    d_cols = (cols[:, None] - cols[None, :]).abs()
    return d_rows * window_size + d_cols


class WindowAttention(nn.Module):
    """Multi-head self-attention within one window, with pre-LayerNorm and learned offset biases.

    The qkv projection's output is laid out per head as [q | k | v] (head-major), not as SAM's
    [all q | all k | all v]; the reshape below follows the checkpoint's layout.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        # Derived from the window size, not learned: the checkpoint does not store it, so it must stay
        # out of state_dict (persistent=False) for strict loading, but still follow .to(device).
        self.register_buffer("attention_bias_idxs", relative_offset_index(window_size), persistent=False)
        self.attention_bias_idxs: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, C) -> (N, T, C): N windows of T = window_size**2 tokens each."""
        n, t, c = x.shape
        qkv = self.qkv(self.norm(x)).view(n, t, self.num_heads, 3, self.head_dim)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # each (N, heads, T, head_dim)
        # (1, heads, T, T), broadcast over the N windows. The leading 1 matters: with a 3-D mask PyTorch's
        # CPU dispatcher falls back to the unfused math kernel (an N x heads x T x T score buffer plus a
        # "safe softmax" pass), about 3x slower here; a 4-D mask takes the fused flash kernel.
        bias = self.attention_biases[:, self.attention_bias_idxs].unsqueeze(0)
        # softmax(q k^T / sqrt(head_dim) + bias) v; SDPA's default scale is 1/sqrt(head_dim) too.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(n, t, c))


class Mlp(nn.Module):
    """Pre-LayerNorm two-layer MLP with GELU: (..., C) -> (..., C)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise local conv, MLP. Works on channels-last (B, H, W, C) tokens."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, padding=local_conv_size // 2, groups=dim)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C), attention restricted to non-overlapping windows.

        The grid is zero-padded at the bottom/right up to a multiple of the window size *before* the
        attention's LayerNorm, as TinyViT does: the padded tokens therefore become LayerNorm-bias tokens
        that real tokens attend to. Skipping them would change the result, so they are kept.
        """
        b, h, w, c = x.shape
        ws = self.window_size
        pad_b = (ws - h % ws) % ws
        pad_r = (ws - w % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        # Window partition by reshape: (B, nh, ws, nw, ws, C) -> (B*nh*nw, ws*ws, C).
        windows = x.reshape(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        windows = self.attn(windows)
        x = windows.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        if pad_b or pad_r:
            x = x[:, :h, :w]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        x = x + self._windowed_attention(x)
        # The depthwise conv sees an NCHW view of the channels-last tensor (no copy); note there is no
        # residual around it, unlike the attention and the MLP.
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """TinyViT's first stage: MBConv blocks then a PatchMerging. (B, C, H, W) -> (B, C', H/2, W/2)."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, out_dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """TinyViT blocks, optionally followed by a PatchMerging. (B, C, H, W) -> (B, C', H', W')."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        out_dim: int | None,
        downsample_stride: int,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio, local_conv_size) for _ in range(depth)
        )
        self.downsample = PatchMerging(dim, out_dim, stride=downsample_stride) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # blocks work on (B, H, W, C) tokens
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class TinyViTEncoder(nn.Module):
    """MobileSAM's image encoder: (B, 3, img_size, img_size) normalised image -> (B, 256, s/16, s/16).

    Use `build_tiny_vit_encoder()` for MobileSAM's configuration.
    """

    def __init__(
        self,
        img_size: int = IMG_SIZE,
        in_channels: int = 3,
        embed_dims: tuple[int, ...] = EMBED_DIMS,
        depths: tuple[int, ...] = DEPTHS,
        num_heads: tuple[int, ...] = NUM_HEADS,
        window_sizes: tuple[int, ...] = WINDOW_SIZES,
        mlp_ratio: float = MLP_RATIO,
        mbconv_expand_ratio: float = MBCONV_EXPAND_RATIO,
        local_conv_size: int = LOCAL_CONV_SIZE,
        neck_channels: int = NECK_CHANNELS,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        if not len(embed_dims) == len(depths) == len(num_heads) == len(window_sizes) >= 2:
            raise ValueError("embed_dims, depths, num_heads and window_sizes need one entry per stage")
        self.img_size = img_size
        self.in_channels = in_channels
        self.patch_embed = PatchEmbed(in_channels, embed_dims[0])
        last = len(depths) - 1
        stages: list[nn.Module] = [ConvStage(embed_dims[0], depths[0], mbconv_expand_ratio, embed_dims[1])]
        for i in range(1, len(depths)):
            stages.append(
                AttentionStage(
                    embed_dims[i],
                    depths[i],
                    num_heads[i],
                    window_sizes[i],
                    mlp_ratio,
                    local_conv_size,
                    out_dim=embed_dims[i + 1] if i < last else None,
                    # MobileSAM: the merge into the last stage keeps the resolution (total stride 16).
                    downsample_stride=1 if i + 1 == last else 2,
                )
            )
        self.layers = nn.ModuleList(stages)
        # TinyViT's ImageNet classifier: unused by MobileSAM, present in the checkpoint (see module doc).
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], neck_channels, kernel_size=1, bias=False),
            LayerNorm2d(neck_channels),
            nn.Conv2d(neck_channels, neck_channels, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, img_size, img_size) -> (B, 256, img_size/16, img_size/16)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"expected (B, {self.in_channels}, {self.img_size}, {self.img_size}), got {tuple(x.shape)}"
            )
        # Channels-last memory layout (same logical NCHW shape): CPU convolutions run faster on it, and
        # the attention stages' (B, H, W, C) token views of it need no copy.
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.patch_embed(x)  # (B, 64, 256, 256)
        for stage in self.layers:
            x = stage(x)  # ... -> (B, 320, 64, 64)
        # Back to the default contiguous layout so callers can .view()/serialise the embedding freely.
        return self.neck(x).contiguous()  # (B, 256, 64, 64)


def build_tiny_vit_encoder() -> TinyViTEncoder:
    """MobileSAM's TinyViT-5M image encoder (random weights; load `image_encoder.*` from the checkpoint).

    Input (B, 3, 1024, 1024) normalised float, output (B, 256, 64, 64). Call `.eval()` before use: the
    BatchNorms must use their running statistics.
    """
    return TinyViTEncoder()
