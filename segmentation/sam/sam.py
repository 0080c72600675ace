"""The assembled Segment Anything model: image encoder + prompt encoder + mask decoder.

Also owns the image normalisation/padding before the encoder and the mask upscaling after the
decoder, so the predictor, the worker and the ONNX export share one definition of both.
State-dict keys are `image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*`, as in the released
checkpoints; `pixel_mean`/`pixel_std` are non-persistent buffers (the checkpoints do not hold them).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

# ImageNet statistics on the 0..255 scale, as the released models were trained with.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """SAM / MobileSAM. `image_encoder` maps (B, 3, 1024, 1024) normalised -> (B, 256, 64, 64)."""

    mask_threshold: float = 0.0
    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        img_size: int = 1024,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        # Kept here rather than read from the encoder: MobileSAM's TinyViT need not expose it.
        self.img_size = img_size
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Resized image (B, 3, h, w), values 0..255 (uint8 or float) -> (B, 3, img_size, img_size).

        Normalise first, then zero-pad bottom/right: padding is zero in normalised units.
        """
        x = (x.to(torch.float32) - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """Low-res logits (B, C, 256, 256) -> logits (B, C, H, W) at the original image size.

        Upscale to the padded square, drop the padding (input_size is the resized (h, w)), then
        resize to original_size (H, W); bilinear, half-pixel centres (align_corners=False).
        """
        masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)
