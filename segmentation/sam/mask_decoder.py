"""SAM's mask decoder (Kirillov et al. 2023, section 3 "Mask decoder" and appendix A).

Learned output tokens (one IoU token and four mask tokens) are prepended to the prompt tokens and run
through the two-way transformer together with the image embedding. The image tokens are upsampled 4x
by two transposed convolutions; each mask token goes through its own 3-layer MLP (a hypernetwork) to
give per-pixel weights, and the mask is their dot product with the upsampled features. The IoU token
predicts each mask's quality.

Mask token 0 is the single-mask output; tokens 1..3 are the three "multimask" candidates.
"""

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """(image embedding, prompt embeddings) -> low-res mask logits (B, C, 256, 256) and IoU (B, C)."""

    def __init__(
        self,
        *,
        transformer_dim: int = 256,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens' outputs.

        image_embeddings (1 or B, C, h, w); image_pe (1, C, h, w); sparse (B, N, C); dense (B, C, h, w).
        Returns masks (B, num_mask_tokens, 4h, 4w) logits and iou (B, num_mask_tokens).
        """
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)

        # One image serves every prompt set in the batch: broadcasting replaces an explicit repeat.
        src = image_embeddings + dense_prompt_embeddings
        b, c, h, w = src.shape
        hs, src_tokens = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src_tokens.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (B, num_mask_tokens, C/8)
        _, cu, hu, wu = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As predict_masks, keeping tokens 1..3 when multimask_output else token 0.

        Returns masks (B, 3 or 1, 4h, 4w) and iou (B, 3 or 1).
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou_pred[:, keep]
