"""Our SAM / MobileSAM against the official SamPredictor outputs stored in the fixtures.

Parametrised over every case and prompt of every fixture directory in SAM_PARITY_FIXTURE
(default: tests/fixtures/sam_tiny and tests/fixtures/mobile_sam). Each model is built once per
module and each image encoded once.
"""

from pathlib import Path

import numpy as np
import pytest

from segmentation.sam.build import build_model
from segmentation.sam.predictor import SamPredictor, encode_image
from segmentation.sam.sam import Sam
from tests.sam_reference import (
    EMBEDDING_ATOL,
    IOU_ATOL,
    LOGITS_ATOL,
    MIN_MASK_IOU,
    Case,
    Prompt,
    all_cases,
    all_prompts,
    case_id,
    fixture_checkpoint,
    fixture_spec,
    load_image,
    load_reference,
    load_reference_embedding,
    mask_ious,
)


class Models:
    """Lazily built models (one per fixture directory) and encoded images (one per case)."""

    def __init__(self) -> None:
        self._models: dict[Path, Sam] = {}
        self._predictors: dict[str, SamPredictor] = {}

    def model(self, fixture: Path) -> Sam:
        if fixture not in self._models:
            spec = fixture_spec(fixture)
            self._models[fixture] = build_model(spec, fixture_checkpoint(fixture, spec))
        return self._models[fixture]

    def predictor(self, case: Case) -> SamPredictor:
        key = case_id(case)
        if key not in self._predictors:
            predictor = SamPredictor(self.model(case.fixture))
            predictor.set_image(load_image(case))
            self._predictors[key] = predictor
        return self._predictors[key]


@pytest.fixture(scope="module")
def models() -> Models:
    return Models()


PROMPTS = all_prompts()
CASES_WITH_EMBEDDING = [c for c in all_cases() if c.embedding]


def test_fixtures_are_present() -> None:
    # Guards against an empty parametrisation (a wrong SAM_PARITY_FIXTURE) silently testing nothing.
    assert PROMPTS, "no fixture prompts found"


@pytest.mark.parametrize("case", CASES_WITH_EMBEDDING, ids=[case_id(c) for c in CASES_WITH_EMBEDDING])
def test_embedding_parity(models: Models, case: Case) -> None:
    predictor = models.predictor(case)
    assert predictor.input_size == case.input_size
    reference = load_reference_embedding(case)
    assert reference is not None
    ours = predictor.get_image_embedding().numpy()
    assert ours.shape == reference.shape == (1, 256, 64, 64)
    diff = float(np.abs(ours - reference).max())
    assert diff <= EMBEDDING_ATOL, f"embedding max abs diff {diff:.3g}"


@pytest.mark.parametrize(("case", "prompt"), PROMPTS, ids=[case_id(c, p) for c, p in PROMPTS])
def test_prompt_parity(models: Models, case: Case, prompt: Prompt) -> None:
    predictor = models.predictor(case)
    assert predictor.input_size == case.input_size
    masks, iou, low_res = predictor.predict(
        point_coords=prompt.points,
        point_labels=prompt.labels,
        box=prompt.box,
        multimask_output=prompt.multimask,
    )
    ref = load_reference(case, prompt)
    assert masks.dtype == np.bool_
    assert masks.shape == ref.masks.shape == (3 if prompt.multimask else 1, case.height, case.width)
    logits_diff = float(np.abs(low_res - ref.low_res_logits).max())
    iou_diff = float(np.abs(iou - ref.iou).max())
    worst_mask_iou = float(mask_ious(masks, ref.masks).min())
    assert logits_diff <= LOGITS_ATOL, f"low-res logits max abs diff {logits_diff:.3g}"
    assert iou_diff <= IOU_ATOL, f"iou prediction max abs diff {iou_diff:.3g}"
    assert worst_mask_iou >= MIN_MASK_IOU, f"mask IoU {worst_mask_iou:.5f}"


@pytest.mark.parametrize("case", all_cases()[:1], ids=[case_id(c) for c in all_cases()[:1]])
def test_encode_image_matches_predictor_parity(models: Models, case: Case) -> None:
    """The worker's encode_image gives the predictor's embedding, as float32 (1, 256, 64, 64)."""
    predictor = models.predictor(case)
    embedding = encode_image(models.model(case.fixture), load_image(case))
    assert embedding.dtype == np.float32 and embedding.shape == (1, 256, 64, 64)
    # Not bitwise: oneDNN may pick other kernels when another test changed torch's thread count.
    np.testing.assert_allclose(embedding, predictor.get_image_embedding().numpy(), rtol=0, atol=1e-3)


@pytest.mark.parametrize(("case", "prompt"), PROMPTS[:2], ids=[case_id(c, p) for c, p in PROMPTS[:2]])
def test_return_logits_threshold_parity(models: Models, case: Case, prompt: Prompt) -> None:
    """return_logits gives the logits whose > 0.0 threshold is the boolean mask output."""
    predictor = models.predictor(case)
    masks, _, _ = predictor.predict(prompt.points, prompt.labels, prompt.box, None, prompt.multimask)
    logits, _, _ = predictor.predict(prompt.points, prompt.labels, prompt.box, None, prompt.multimask, True)
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits > 0.0, masks)
