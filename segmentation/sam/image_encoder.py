"""SAM's ViT image encoder (ViTDet-style backbone, Kirillov et al. 2023, section 3 and appendix A).

A plain ViT over 16x16 patches of the padded 1024x1024 input with an absolute position embedding.
Most blocks attend inside non-overlapping 14x14 windows; a few (`global_attn_indexes`) attend over
the whole 64x64 grid. Every attention adds decomposed relative position biases (MViTv2): one learned
table per axis, indexed by the query-key offset along that axis. A convolutional neck maps the
tokens to the 256-channel, 64x64 image embedding the mask decoder consumes.

Module and parameter names follow the released checkpoints (`patch_embed.proj`, `pos_embed`,
`blocks.<i>.{norm1,attn.{qkv,proj,rel_pos_h,rel_pos_w},norm2,mlp.{lin1,lin2}}`, `neck.<0..3>`).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> (B, H/p, W/p, dim), channels last."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, H/p, W/p, embed_dim)."""
        # Channels-last because the transformer blocks and window partitioning work on (B, H, W, C).
        return self.proj(x).permute(0, 2, 3, 1)


def relative_position_table(size: int, table: torch.Tensor) -> torch.Tensor:
    """Per-offset embeddings for every (query, key) pair along one axis of length `size`.

    table: (2*size-1, C), row `d + size - 1` holding offset d = q - k. Returns (size, size, C).
    """
    if table.shape[0] != 2 * size - 1:
        # The checkpoints size the tables for the grid they are used on (64 global, 14 windowed),
        # and the input is always padded to img_size, so any other length is a config error.
        raise ValueError(f"relative position table has {table.shape[0]} rows, expected {2 * size - 1}")
    coords = torch.arange(size, device=table.device)
    offsets = coords[:, None] - coords[None, :] + (size - 1)
    return table[offsets]


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) grid with decomposed relative position bias."""

    def __init__(self, dim: int, num_heads: int, grid_size: tuple[int, int], qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        b, h, w, c = x.shape
        n = h * w
        # (B, N, 3, heads, hd) -> (3, B, heads, N, hd)
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)

        # Decomposed relative position bias: attn[(i,j),(k,l)] += q_(i,j) . Rh[i-k] + q_(i,j) . Rw[j-l].
        # The bias uses the unscaled query, as in the paper's formulation (MViTv2, eq. 4).
        rh = relative_position_table(h, self.rel_pos_h)  # (H, H, hd)
        rw = relative_position_table(w, self.rel_pos_w)  # (W, W, hd)
        q_grid = q.reshape(b, self.num_heads, h, w, -1)
        bias_h = torch.einsum("bnhwc,hkc->bnhwk", q_grid, rh)  # (B, heads, H, W, H)
        bias_w = torch.einsum("bnhwc,wkc->bnhwk", q_grid, rw)  # (B, heads, H, W, W)
        bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(b, self.num_heads, n, n)

        # softmax(q k^T / sqrt(hd) + bias) v; the fused kernel avoids a second N x N buffer.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, heads, N, hd)
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, c)
        return self.proj(out)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split (B, H, W, C) into (B * nWin, window, window, C), zero-padding H and W up to a multiple.

    Returns the windows and the padded (Hp, Wp). Padding tokens take part in attention as in the
    reference model (they are not masked), which the released weights were trained with.
    """
    b, h, w, c = x.shape
    pad_h = (window - h % window) % window
    pad_w = (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of window_partition: (B * nWin, window, window, C) -> (B, H, W, C), padding removed."""
    hp, wp = padded
    h, w = size
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous()


class Block(nn.Module):
    """Pre-norm transformer block; windowed attention when window_size > 0, else global."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.window_size = window_size
        # The relative position tables cover the grid the attention actually sees.
        attn_grid = (window_size, window_size) if window_size > 0 else grid_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            windows, padded = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(windows), self.window_size, padded, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """SAM ViT backbone + neck: (B, 3, img_size, img_size) normalised -> (B, out_chans, 64, 64)."""

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        global_set = set(global_attn_indexes)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                window_size=0 if i in global_set else window_size,
                grid_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, img_size, img_size) -> (B, out_chans, img_size/16, img_size/16)."""
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
