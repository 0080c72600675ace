"""Image -> embedding once, then prompts -> masks many times (the SamPredictor workflow).

Numerically this follows the official SamPredictor: Pillow bilinear resize of the uint8 image to
longest side 1024, normalise, zero-pad bottom/right, encode; prompts scaled into the resized frame in
float64 then cast to float32; masks upscaled bilinear to 1024x1024, cropped to the resized size,
resized to the original size and thresholded at 0.0.
"""

import numpy as np
import torch

from .sam import Sam
from .transforms import ResizeLongestSide


def ensure_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 -> (H, W, 3) uint8 RGB.

    Grey is replicated to three channels and alpha dropped, as Pillow's convert("RGB") does.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected HxW, HxWx1, HxWx3 or HxWx4, got {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


@torch.no_grad()
def _encode(model: Sam, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> embedding (1, 256, 64, 64) and the resized (h, w)."""
    resized = ResizeLongestSide(model.img_size).apply_image(image)
    x = torch.as_tensor(resized, device=model.device).permute(2, 0, 1).unsqueeze(0)
    embedding = model.image_encoder(model.preprocess(x))
    return embedding, (resized.shape[0], resized.shape[1])


def encode_image(model: Sam, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> image embedding, float32 numpy (1, 256, 64, 64)."""
    embedding, _ = _encode(model, image)
    return embedding.to(torch.float32).cpu().numpy()


class SamPredictor:
    """Holds one image's embedding and predicts masks for prompts in original pixel coordinates."""

    def __init__(self, model: Sam) -> None:
        self.model = model
        self.transform = ResizeLongestSide(model.img_size)
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] = (0, 0)
        self.input_size: tuple[int, int] = (0, 0)

    @property
    def is_image_set(self) -> bool:
        return self.features is not None

    def reset_image(self) -> None:
        self.features = None
        self.original_size = (0, 0)
        self.input_size = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        """Encode an (H, W, 3) uint8 RGB image and keep its embedding for predict()."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")
        self.reset_image()
        self.features, self.input_size = _encode(self.model, image)
        self.original_size = (image.shape[0], image.shape[1])

    def set_embedding(self, embedding: np.ndarray | torch.Tensor, original_size: tuple[int, int]) -> None:
        """Use a precomputed (1, 256, 64, 64) embedding of an image of original_size (H, W)."""
        self.features = torch.as_tensor(embedding, dtype=torch.float32, device=self.model.device)
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = self.transform.target_size(self.original_size)

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, (1, 256, 64, 64)."""
        if self.features is None:
            raise RuntimeError("call set_image() before get_image_embedding()")
        return self.features

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for prompts in original pixels.

        point_coords (N, 2) x, y; point_labels (N,) 1 foreground / 0 background; box (4,) x0 y0 x1 y1;
        mask_input (1, 256, 256) low-res logits from an earlier call (one of the returned low-res masks).
        Returns masks (C, H, W) bool (float32 logits if return_logits), iou (C,), low-res (C, 256, 256),
        with C = 3 if multimask_output else 1.
        """
        if self.features is None:
            raise RuntimeError("call set_image() before predict()")
        device = self.model.device
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            coords = self.transform.apply_coords(point_coords, self.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float32, device=device)[None]
            labels_t = torch.as_tensor(point_labels, dtype=torch.int32, device=device)[None]
        if box is not None:
            boxes = self.transform.apply_boxes(box, self.original_size)
            if boxes.shape[0] != 1:
                raise ValueError("predict() takes a single box of 4 numbers")
            box_t = torch.as_tensor(boxes, dtype=torch.float32, device=device)
        if mask_input is not None:
            mask = torch.as_tensor(mask_input, dtype=torch.float32, device=device)
            mask_t = mask.reshape(1, 1, *mask.shape[-2:])  # (1, 256, 256) or (1, 1, 256, 256)

        masks, iou, low_res = self.predict_torch(coords_t, labels_t, box_t, mask_t, multimask_output, return_logits)
        return masks[0].cpu().numpy(), iou[0].float().cpu().numpy(), low_res[0].float().cpu().numpy()

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prompts already in the resized frame.

        point_coords (B, N, 2), point_labels (B, N), boxes (B, 4), mask_input (B, 1, 256, 256).
        Returns masks (B, C, H, W), iou (B, C), low-res logits (B, C, 256, 256).
        """
        if self.features is None:
            raise RuntimeError("call set_image() before predict_torch()")
        points = (point_coords, point_labels) if point_coords is not None and point_labels is not None else None
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low_res, iou = self.model.mask_decoder(
            image_embeddings=self.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res
