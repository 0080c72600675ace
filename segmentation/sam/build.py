"""Build a Sam from a ModelSpec and load its official checkpoint unchanged (strict key match)."""

from pathlib import Path

import torch
from torch import nn

from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .registry import ModelSpec
from .sam import Sam
from .transformer import TwoWayTransformer

# Shared by every released SAM and MobileSAM: only the image encoder differs between them.
PROMPT_EMBED_DIM = 256
IMG_SIZE = 1024
EMBEDDING_STRIDE = 16  # the image embedding is 64x64 for a 1024x1024 input


def load_checkpoint_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint state_dict on the CPU without unpickling arbitrary objects."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state_dict of tensors")
    return state


def build_image_encoder(spec: ModelSpec) -> nn.Module:
    """The family's image encoder: (B, 3, 1024, 1024) normalised -> (B, 256, 64, 64)."""
    if spec.family == "mobile_sam":
        # Imported lazily: TinyViT lives in its own module and only MobileSAM needs it.
        from .tiny_vit import build_tiny_vit_encoder

        return build_tiny_vit_encoder()
    return ImageEncoderViT(**spec.encoder_config)


def build_sam(spec: ModelSpec) -> Sam:
    """The architecture for `spec` with unloaded (random) weights."""
    grid = IMG_SIZE // EMBEDDING_STRIDE
    return Sam(
        image_encoder=build_image_encoder(spec),
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_EMBED_DIM,
            image_embedding_size=(grid, grid),
            input_image_size=(IMG_SIZE, IMG_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=PROMPT_EMBED_DIM,
            transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_EMBED_DIM, num_heads=8, mlp_dim=2048),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        img_size=IMG_SIZE,
    )


def build_model(spec: ModelSpec, checkpoint_path: Path) -> Sam:
    """Sam for `spec` with weights from checkpoint_path, in eval mode.

    The load is strict: a checkpoint for another variant fails loudly instead of half-loading.
    """
    model = build_sam(spec)
    model.load_state_dict(load_checkpoint_state_dict(checkpoint_path), strict=True)
    return model.eval()
