"""Resize-longest-side transform: the image and prompt geometry SAM's encoder and decoder expect.

The image is resized so its longest side is `target_length` (1024), keeping the aspect ratio, then
(in `Sam.preprocess`) normalised and zero-padded bottom/right to a square. Prompts given in original
pixels are scaled by the same per-axis factors.

To match the official predictor bit for bit, the image resize is Pillow's bilinear resize of the
uint8 RGB image (the reference goes through torchvision's `to_pil_image` + `resize`, which for a PIL
image is exactly `Image.resize((w, h), BILINEAR)`), and sizes round as `int(x + 0.5)` in float64.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def get_preprocess_shape(old_h: int, old_w: int, long_side_length: int) -> tuple[int, int]:
    """(h, w) after scaling so the longer side is long_side_length; each side rounded half up."""
    # Python floats (float64) and this exact order of operations: the ONNX decoder repeats it in
    # float64 so its crop size can never differ from the encoder's resize by a rounding step.
    scale = long_side_length * 1.0 / max(old_h, old_w)
    new_h, new_w = old_h * scale, old_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


class ResizeLongestSide:
    """Resizes images to longest side `target_length` and maps coordinates and boxes accordingly."""

    def __init__(self, target_length: int = 1024) -> None:
        self.target_length = target_length

    def target_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the resized image for an original (h, w)."""
        return get_preprocess_shape(original_size[0], original_size[1], self.target_length)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (h, w, 3) uint8, longest side target_length, Pillow bilinear."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 image, got {image.shape} {image.dtype}")
        new_h, new_w = self.target_size((image.shape[0], image.shape[1]))
        pil = Image.fromarray(np.ascontiguousarray(image))  # HxWx3 uint8 is mode "RGB"
        return np.array(pil.resize((new_w, new_h), Image.Resampling.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """(..., 2) (x, y) in original pixels -> float64 (..., 2) in the resized frame."""
        old_h, old_w = original_size
        new_h, new_w = self.target_size(original_size)
        out = np.array(coords, dtype=np.float64, copy=True)
        out[..., 0] = out[..., 0] * (new_w / old_w)
        out[..., 1] = out[..., 1] * (new_h / old_h)
        return out

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """(B, 4) or (4,) x0 y0 x1 y1 in original pixels -> float64 (B, 4) in the resized frame."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Torch version of apply_coords: (..., 2) -> float32 (..., 2)."""
        old_h, old_w = original_size
        new_h, new_w = self.target_size(original_size)
        out = coords.to(torch.float32).clone()
        out[..., 0] = out[..., 0] * (new_w / old_w)
        out[..., 1] = out[..., 1] * (new_h / old_h)
        return out

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Torch version of apply_boxes: (B, 4) -> float32 (B, 4)."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> (B, C, h, w) antialiased bilinear.

        Close to, but not bit-identical with, apply_image; use apply_image for the model input.
        """
        new_h, new_w = self.target_size((images.shape[2], images.shape[3]))
        return F.interpolate(images, (new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
