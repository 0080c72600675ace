"""EncoderRuntime against predictor.encode_image on the fixture images (tests/fixtures/*).

float32 paths must reproduce encode_image (max abs diff <= 1e-4) whatever the batch composition;
the bfloat16 path must give masks of IoU >= 0.99 with the float32 masks on a MobileSAM case.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from segmentation.sam import tiny_vit_cpu
from segmentation.sam.build import build_model
from segmentation.sam.encoder_runtime import EncoderRuntime
from segmentation.sam.predictor import SamPredictor, encode_image
from segmentation.sam.sam import Sam
from tests.sam_reference import (
    REPO_ROOT,
    Case,
    fixture_checkpoint,
    fixture_spec,
    load_cases,
    load_image,
    mask_ious,
)

ATOL = 1e-4
MIN_BF16_MASK_IOU = 0.99
MOBILE_SAM = REPO_ROOT / "tests" / "fixtures" / "mobile_sam"
SAM_TINY = REPO_ROOT / "tests" / "fixtures" / "sam_tiny"


def load_model(fixture: Path) -> Sam:
    spec = fixture_spec(fixture)
    return build_model(spec, fixture_checkpoint(fixture, spec))


class Fixture:
    """A fixture's model, a few of its images (distinct sizes first) and their encode_image embeddings."""

    def __init__(self, fixture: Path, count: int) -> None:
        self.fixture = fixture
        self.model = load_model(fixture)
        by_size: dict[tuple[int, int], Case] = {}
        for case in load_cases(fixture):
            by_size.setdefault((case.height, case.width), case)
        self.cases = list(by_size.values())[:count]
        self.images = [load_image(case) for case in self.cases]
        self.references = [encode_image(self.model, image) for image in self.images]

    def runtime(self, **options: object) -> EncoderRuntime:
        # A model of its own: the runtime prepares the model it is given in place.
        return EncoderRuntime(load_model(self.fixture), **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def mobile_sam() -> Fixture:
    return Fixture(MOBILE_SAM, 2)


@pytest.fixture(scope="module")
def sam_tiny() -> Fixture:
    return Fixture(SAM_TINY, 3)


def assert_close(embeddings: list[np.ndarray], references: list[np.ndarray]) -> None:
    assert len(embeddings) == len(references)
    for embedding, reference in zip(embeddings, references, strict=True):
        assert embedding.shape == (1, 256, 64, 64) and embedding.dtype == np.float32
        diff = float(np.abs(embedding - reference).max())
        assert diff <= ATOL, f"max abs diff {diff:.3g}"


def test_fixtures_have_mixed_sizes(mobile_sam: Fixture, sam_tiny: Fixture) -> None:
    # The batches below are only meaningful if their images differ in size (different padding).
    assert len({image.shape for image in mobile_sam.images}) == 2
    assert len({image.shape for image in sam_tiny.images}) == 3


def test_mobile_sam_fused_cpu_batch_and_stream(mobile_sam: Fixture) -> None:
    runtime = mobile_sam.runtime(device="cpu", max_batch_size=2)
    assert runtime.engine == "fused-cpu"
    assert_close(runtime.encode_batch(mobile_sam.images), mobile_sam.references)
    assert_close(list(runtime.encode_stream(iter(mobile_sam.images), batch_size=1)), mobile_sam.references)


def test_fused_cpu_bands_and_chunks_of_any_size(mobile_sam: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands and token chunks that do not divide the image: the halo and edge logic, not just even splits."""
    # 7 rows of the 256-channel, 256-wide MBConv intermediate; MLP chunks of 1000 and 400 tokens.
    monkeypatch.setattr(tiny_vit_cpu, "BAND_BYTES", 7 * 256 * 256 * 4)
    monkeypatch.setattr(tiny_vit_cpu, "CHUNK_BYTES", 1000 * 512 * 4)
    runtime = mobile_sam.runtime(device="cpu")
    assert_close(runtime.encode_batch(mobile_sam.images[:1]), mobile_sam.references[:1])


def test_sam_vit_batch_of_mixed_sizes(sam_tiny: Fixture) -> None:
    runtime = sam_tiny.runtime(device="cpu", max_batch_size=3)
    assert runtime.engine == "module"
    assert_close(runtime.encode_batch(sam_tiny.images), sam_tiny.references)


def test_sam_vit_stream_keeps_order_across_batches(sam_tiny: Fixture) -> None:
    runtime = sam_tiny.runtime(device="cpu", max_batch_size=2)
    images = sam_tiny.images + sam_tiny.images[:1]
    references = sam_tiny.references + sam_tiny.references[:1]
    assert_close(list(runtime.encode_stream(iter(images), preprocess_workers=2)), references)


def test_preprocess_is_the_predictor_input(sam_tiny: Fixture) -> None:
    """Normalising + padding the preprocess() output gives Sam.preprocess's input bit for bit."""
    runtime = sam_tiny.runtime(device="cpu")
    image = sam_tiny.images[2]
    resized = runtime.preprocess(image)
    assert resized.dtype.is_floating_point is False and resized.shape[0] == 3
    expected = runtime.model.preprocess(resized[None])
    assert np.array_equal(runtime._assemble([resized]).numpy(), expected.numpy())


def test_stream_raises_the_iterables_error_after_earlier_embeddings(sam_tiny: Fixture) -> None:
    runtime = sam_tiny.runtime(device="cpu", max_batch_size=1)

    def images() -> Iterator[np.ndarray]:
        yield sam_tiny.images[0]
        raise OSError("cannot decode image 2")

    stream = runtime.encode_stream(images())
    assert_close([next(stream)], sam_tiny.references[:1])
    with pytest.raises(OSError, match="cannot decode"):
        next(stream)


def test_abandoned_stream_stops_its_thread(sam_tiny: Fixture) -> None:
    runtime = sam_tiny.runtime(device="cpu", max_batch_size=1)
    stream = runtime.encode_stream(iter(sam_tiny.images * 3))
    next(stream)
    stream.close()
    assert not any(t.name == "encoder-preprocess" for t in threading.enumerate())


def assert_bf16_masks_match_fp32(fx: Fixture, runtime: EncoderRuntime) -> None:
    """The first case's bf16 embedding against its fp32 one, through the masks of every fixture prompt."""
    case, image, reference = fx.cases[0], fx.images[0], fx.references[0]
    (embedding,) = runtime.encode_batch([image])
    assert float(np.abs(embedding - reference).max()) > 0  # really a different path
    fp32, bf16 = SamPredictor(fx.model), SamPredictor(fx.model)
    fp32.set_embedding(reference, (case.height, case.width))
    bf16.set_embedding(embedding, (case.height, case.width))
    for prompt in case.prompts:
        args = (prompt.points, prompt.labels, prompt.box, None, prompt.multimask)
        expected, _, _ = fp32.predict(*args)
        masks, _, _ = bf16.predict(*args)
        worst = float(mask_ious(masks, expected).min())
        assert worst >= MIN_BF16_MASK_IOU, f"{case.stem}/{prompt.name}: mask IoU {worst:.4f}"


def test_bf16_cpu_masks_match_fp32(mobile_sam: Fixture) -> None:
    """MobileSAM's CPU bf16 path (bf16 weights and activations, fp32 LayerNorm statistics)."""
    runtime = mobile_sam.runtime(device="cpu", precision="bf16")
    assert runtime.engine == "fused-cpu"
    # astronaut: every mask >= 0.99. Not every MobileSAM case gets there in bf16 (see RESULTS.md).
    assert mobile_sam.cases[0].stem == "astronaut"
    assert_bf16_masks_match_fp32(mobile_sam, runtime)


def test_bf16_autocast_masks_match_fp32(sam_tiny: Fixture) -> None:
    """The module path's bf16 (what CUDA runs): autocast with LayerNorms forced to fp32, on SAM's ViT."""
    runtime = sam_tiny.runtime(device="cpu", precision="bf16")
    assert runtime.engine == "module"
    assert_bf16_masks_match_fp32(sam_tiny, runtime)
