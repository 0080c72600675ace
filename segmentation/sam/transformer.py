"""SAM's two-way transformer (Kirillov et al. 2023, appendix A, "Lightweight mask decoder").

Prompt tokens and image-embedding tokens update each other: in every layer the tokens run
self-attention, then attend to the image ("token to image"), then an MLP, and finally the image
attends back to the tokens ("image to token"). Positional encodings are re-added to queries and keys
at every attention (not to values), and cross-attentions work in a channel-halved space.
"""

import math

import torch
from torch import nn

from .common import MLPBlock


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections into `embedding_dim // downsample_rate`."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        internal_dim = embedding_dim // downsample_rate
        if internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, internal_dim)
        self.k_proj = nn.Linear(embedding_dim, internal_dim)
        self.v_proj = nn.Linear(embedding_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, embedding_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, heads, N, D / heads)."""
        b, n, d = x.shape
        return x.reshape(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, Nq, C), k and v (B, Nk, C) -> (B, Nq, C)."""
        q = self._split_heads(self.q_proj(q))
        k = self._split_heads(self.k_proj(k))
        v = self._split_heads(self.v_proj(v))
        # Written as explicit MatMul/Softmax (rather than a fused kernel) so the exported ONNX graph
        # stays plain standard ops for onnxruntime-web, and torch and ONNX compute the same thing.
        attn = q @ k.transpose(-2, -1)
        attn = attn / math.sqrt(q.shape[-1])
        attn = torch.softmax(attn, dim=-1)
        out = attn @ v  # (B, heads, Nq, hd)
        b, _, nq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, nq, -1))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attn, token->image cross-attn, token MLP, image->token cross-attn; post-norm."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int,
        skip_first_layer_pe: bool,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, Nt, C), keys (B, Ni, C), query_pe like queries, key_pe (B or 1, Ni, C)."""
        if self.skip_first_layer_pe:
            # In the first layer the tokens already are "prompt embedding + PE", so the self-attention
            # output replaces them instead of being added (no residual), as in the released model.
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        k = keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """`depth` two-way blocks followed by a final token->image attention and LayerNorm."""

    def __init__(
        self,
        *,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim,
                attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding (B, C, h, w), image_pe (B or 1, C, h, w), point_embedding (B, Nt, C).

        Returns the updated tokens (B, Nt, C) and image tokens (B, h*w, C).
        """
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe=point_embedding, key_pe=key_pe)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys
