"""SAM's prompt encoder (Kirillov et al. 2023, section 3 "Prompt encoder" and appendix A).

Sparse prompts (points, box corners) become 256-d tokens: a random-Fourier-feature positional
encoding of the location plus a learned embedding for the prompt kind. Dense prompts (a low-res mask
from an earlier prediction) go through a small strided conv stack to the 64x64 embedding grid; with
no mask, a learned "no mask" vector is broadcast over the grid instead.

Point kinds are carried as labels, the same way the ONNX decoder receives them:
    -1 padding ("not a point"), 0 negative click, 1 positive click, 2 box top-left, 3 box bottom-right.
"""

import math
from typing import cast

import torch
from torch import nn

from .common import LayerNorm2d

PAD_LABEL = -1
BOX_TOP_LEFT_LABEL = 2
BOX_BOTTOM_RIGHT_LABEL = 3


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of 2-D coordinates with a fixed random projection (buffer in the checkpoint)."""

    positional_encoding_gaussian_matrix: torch.Tensor

    def __init__(self, num_pos_feats: int = 128) -> None:
        super().__init__()
        # Overwritten by the checkpoint; random only so an unloaded model is still well-formed.
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """Coordinates normalised to [0, 1], (..., 2) as (x, y) -> (..., 2 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords.to(self.positional_encoding_gaussian_matrix.dtype)
        coords = coords @ self.positional_encoding_gaussian_matrix
        # 2*pi as one float constant, the order of operations the released weights were produced with.
        coords = (2 * math.pi) * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def dense(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an (h, w) grid -> (2 * num_pos_feats, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        # Cell centres (i + 0.5) / n; integers and halves are exact in float32.
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)
        return self.encode(grid).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """Embeds points, boxes and mask prompts into sparse (B, N, C) and dense (B, C, h, w) tensors."""

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # Indexed by label: 0 negative, 1 positive, 2 box top-left, 3 box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        # Mask prompts are 4x the embedding grid (256x256); two stride-2 convs bring them to 64x64.
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid -> (1, C, h, w)."""
        return self.pe_layer.dense(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Labelled points in the resized-input frame -> sparse tokens.

        coords: (B, N, 2) pixel (x, y) in the 1024-long-side input frame; labels: (B, N), any dtype,
        values in {-1, 0, 1, 2, 3}. Returns (B, N, C).
        """
        # Shift to the pixel centre, then normalise by the input size (x by width, y by height).
        coords = coords + 0.5
        scale = coords.new_tensor([self.input_image_size[1], self.input_image_size[0]])
        pe = self.pe_layer.encode(coords / scale)
        labels = labels.to(pe.dtype).unsqueeze(-1)  # (B, N, 1)
        # Padding points carry no position: their token is exactly the "not a point" vector.
        # Masks multiply by exact 0/1 so every token gets exactly one learned vector added.
        is_pad = labels == PAD_LABEL
        tokens = torch.where(is_pad, torch.zeros_like(pe), pe)
        tokens = tokens + self.not_a_point_embed.weight * is_pad.to(pe.dtype)
        for kind, embedding in enumerate(self.point_embeddings):
            weight = cast(nn.Embedding, embedding).weight
            tokens = tokens + weight * (labels == kind).to(pe.dtype)
        return tokens

    def embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Low-res mask logits (B, 1, 256, 256) -> dense embedding (B, C, 64, 64)."""
        return self.mask_downscaling(masks)

    def no_mask_dense(self, batch: int) -> torch.Tensor:
        """Dense embedding used when there is no mask prompt -> (batch, C, h, w)."""
        h, w = self.image_embedding_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts given in the resized-input frame.

        points: ((B, N, 2) coords, (B, N) labels 0/1) or None; boxes: (B, 4) x0 y0 x1 y1 or None;
        masks: (B, 1, 256, 256) or None. Returns sparse (B, N', C) and dense (B, C, 64, 64).
        Token order is points, then either a padding point (no box) or the two box corners.
        """
        coords_parts: list[torch.Tensor] = []
        label_parts: list[torch.Tensor] = []
        device = self.no_mask_embed.weight.device
        if points is not None:
            coords, labels = points
            coords_parts.append(coords.to(torch.float32))
            label_parts.append(labels.to(torch.float32))
            if boxes is None:
                # Without a box, SAM appends one padding token (the model was trained this way).
                batch = coords.shape[0]
                coords_parts.append(torch.zeros((batch, 1, 2), device=device))
                label_parts.append(torch.full((batch, 1), float(PAD_LABEL), device=device))
        if boxes is not None:
            corners = boxes.to(torch.float32).reshape(-1, 2, 2)
            coords_parts.append(corners)
            corner_labels = torch.tensor([BOX_TOP_LEFT_LABEL, BOX_BOTTOM_RIGHT_LABEL], device=device)
            label_parts.append(corner_labels.to(torch.float32).expand(corners.shape[0], 2))

        if coords_parts:
            sparse = self.embed_points(torch.cat(coords_parts, dim=1), torch.cat(label_parts, dim=1))
            batch = sparse.shape[0]
        else:
            batch = masks.shape[0] if masks is not None else 1
            sparse = torch.empty((batch, 0, self.embed_dim), device=device)

        dense = self.embed_masks(masks) if masks is not None else self.no_mask_dense(batch)
        return sparse, dense
