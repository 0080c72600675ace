"""The exported ONNX decoder against the torch decoder (and the official outputs where possible).

One file is exported per model and used for every image shape: square, landscape (the fixtures),
portrait (fixture embeddings with the size transposed) and extreme aspect ratios.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from segmentation.sam.build import build_model
from segmentation.sam.onnx_decoder import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    DecoderResult,
    OnnxDecoder,
    build_decoder_inputs,
    crop_size,
    decoder_onnx_path,
    ensure_decoder_onnx,
)
from segmentation.sam.predictor import SamPredictor, encode_image
from segmentation.sam.sam import Sam
from segmentation.sam.transforms import get_preprocess_shape
from tests.sam_reference import (
    IOU_ATOL,
    LOGITS_ATOL,
    MIN_MASK_IOU,
    Case,
    Prompt,
    all_cases,
    all_prompts,
    case_id,
    fixture_checkpoint,
    fixture_dirs,
    fixture_spec,
    load_image,
    load_reference,
    load_reference_embedding,
    mask_ious,
)


@dataclass
class Loaded:
    model: Sam
    onnx_path: Path
    decoder: OnnxDecoder


class Decoders:
    """Per fixture directory: the torch model and its exported decoder; per case: an embedding."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._loaded: dict[Path, Loaded] = {}
        self._embeddings: dict[str, tuple[np.ndarray, bool]] = {}

    def get(self, fixture: Path) -> Loaded:
        if fixture not in self._loaded:
            spec = fixture_spec(fixture)
            checkpoint = fixture_checkpoint(fixture, spec)
            model = build_model(spec, checkpoint)
            path = ensure_decoder_onnx(spec, model, checkpoint, self.cache_dir)
            self._loaded[fixture] = Loaded(model, path, OnnxDecoder(path))
        return self._loaded[fixture]

    def embedding(self, case: Case) -> tuple[np.ndarray, bool]:
        """(1, 256, 64, 64) embedding and whether it is the official one (else computed by us)."""
        key = case_id(case)
        if key not in self._embeddings:
            reference = load_reference_embedding(case)
            if reference is not None:
                self._embeddings[key] = (reference, True)
            else:
                self._embeddings[key] = (encode_image(self.get(case.fixture).model, load_image(case)), False)
        return self._embeddings[key]


@pytest.fixture(scope="module")
def decoders(tmp_path_factory: pytest.TempPathFactory) -> Decoders:
    return Decoders(tmp_path_factory.mktemp("sam_onnx"))


def torch_predict(
    model: Sam,
    embedding: np.ndarray,
    orig_size: tuple[int, int],
    prompt: Prompt,
    multimask: bool,
    mask_input: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    predictor = SamPredictor(model)
    predictor.set_embedding(embedding, orig_size)
    return predictor.predict(
        point_coords=prompt.points,
        point_labels=prompt.labels,
        box=prompt.box,
        mask_input=mask_input,
        multimask_output=multimask,
    )


def onnx_predict(
    decoder: OnnxDecoder,
    embedding: np.ndarray,
    orig_size: tuple[int, int],
    prompt: Prompt,
    multimask: bool,
    mask_input: np.ndarray | None = None,
) -> DecoderResult:
    return decoder.predict(
        embedding=embedding,
        orig_size=orig_size,
        points=prompt.points,
        labels=prompt.labels,
        box=prompt.box,
        mask_input=None if mask_input is None else mask_input[None],
        multimask=multimask,
    )


def assert_close(result: DecoderResult, masks: np.ndarray, iou: np.ndarray, low_res: np.ndarray, what: str) -> None:
    assert result.masks.dtype == np.bool_
    assert result.masks.shape == masks.shape, what
    assert result.low_res_logits.shape == low_res.shape, what
    logits_diff = float(np.abs(result.low_res_logits - low_res).max())
    iou_diff = float(np.abs(result.scores - iou).max())
    worst = float(mask_ious(result.masks, masks).min())
    assert logits_diff <= LOGITS_ATOL, f"{what}: low-res logits max abs diff {logits_diff:.3g}"
    assert iou_diff <= IOU_ATOL, f"{what}: iou max abs diff {iou_diff:.3g}"
    assert worst >= MIN_MASK_IOU, f"{what}: mask IoU {worst:.5f}"


PROMPTS = all_prompts()


@pytest.mark.parametrize(("case", "prompt"), PROMPTS, ids=[case_id(c, p) for c, p in PROMPTS])
def test_onnx_decoder_matches_torch(decoders: Decoders, case: Case, prompt: Prompt) -> None:
    loaded = decoders.get(case.fixture)
    embedding, official = decoders.embedding(case)
    size = (case.height, case.width)

    # Both mask-count modes, from the one graph.
    for multimask in (True, False):
        masks, iou, low_res = torch_predict(loaded.model, embedding, size, prompt, multimask)
        result = onnx_predict(loaded.decoder, embedding, size, prompt, multimask)
        assert_close(result, masks, iou, low_res, f"multimask={multimask}")

    if official:
        # From the official embedding, the ONNX path also reproduces the official outputs.
        ref = load_reference(case, prompt)
        result = onnx_predict(loaded.decoder, embedding, size, prompt, prompt.multimask)
        assert_close(result, ref.masks, ref.iou, ref.low_res_logits, "vs official")

    # Feed the best low-res mask back in as a mask prompt (the interactive refinement loop).
    masks, iou, low_res = torch_predict(loaded.model, embedding, size, prompt, True)
    feedback = low_res[int(np.argmax(iou))][None]  # (1, 256, 256)
    masks, iou, low_res = torch_predict(loaded.model, embedding, size, prompt, False, feedback)
    result = onnx_predict(loaded.decoder, embedding, size, prompt, False, feedback)
    assert_close(result, masks, iou, low_res, "mask_input")


# Portrait and extreme shapes use a fixture embedding with a made-up original size: the graph's
# crop/resize must follow orig_im_size whatever the export-time example was.
SHAPES = [(600, 400), (1000, 1500), (1500, 1000), (2048, 1365), (7, 3000), (3000, 7), (1, 1), (1024, 1024)]


@pytest.mark.parametrize("size", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_onnx_decoder_any_image_shape(decoders: Decoders, size: tuple[int, int]) -> None:
    case = all_cases()[0]
    loaded = decoders.get(case.fixture)
    embedding, _ = decoders.embedding(case)
    # Keep prompts inside the made-up image.
    prompt = Prompt(
        name="shape",
        points=np.array([[size[1] * 0.4, size[0] * 0.6], [size[1] * 0.2, size[0] * 0.3]]),
        labels=np.array([1.0, 0.0]),
        box=np.array([size[1] * 0.1, size[0] * 0.1, size[1] * 0.9, size[0] * 0.8]),
        multimask=True,
        outputs="",
    )
    masks, iou, low_res = torch_predict(loaded.model, embedding, size, prompt, True)
    result = onnx_predict(loaded.decoder, embedding, size, prompt, True)
    assert result.masks.shape == (3, *size)
    assert_close(result, masks, iou, low_res, f"{size}")

    # The logits themselves, before thresholding, agree across the dynamic crop and resize.
    predictor = SamPredictor(loaded.model)
    predictor.set_embedding(embedding, size)
    logits, _, _ = predictor.predict(prompt.points, prompt.labels, prompt.box, return_logits=True)
    feeds = build_decoder_inputs(
        embedding=embedding, orig_size=size, points=prompt.points, labels=prompt.labels, box=prompt.box
    )
    onnx_logits, _, _ = loaded.decoder.run(feeds)
    assert float(np.abs(onnx_logits[0, 1:] - logits).max()) <= 1e-2


def test_crop_size_formula_matches_resize() -> None:
    """The graph's integer crop size equals get_preprocess_shape for every image up to 2500 px a side."""
    pairs = []
    for longest in range(1, 2501):
        short = torch.arange(1, longest + 1)
        pairs.append(torch.stack([short, torch.full_like(short, longest)], dim=1))
    sizes = torch.cat(pairs)  # every (short, long) pair; the formula is symmetric in the two axes
    ours = crop_size(sizes.to(torch.float32), 1024)
    transposed = crop_size(sizes.flip(1).to(torch.float32), 1024)
    assert torch.equal(transposed, ours.flip(1))
    # get_preprocess_shape's float64 arithmetic, vectorised (same IEEE operations, same order).
    short = sizes[:, 0].to(torch.float64)
    scale = 1024 * 1.0 / sizes[:, 1].to(torch.float64)
    assert torch.equal(ours[:, 0], torch.floor(short * scale + 0.5).to(torch.int64))
    assert bool((ours[:, 1] == 1024).all())
    # And the scalar function itself on a sample, including exact .5 ties (2048 x 1365 -> 683).
    for h, w in [(1365, 2048), (2048, 1365), (400, 600), (1000, 1500), (300, 451), (7, 3000), (1, 1)]:
        assert tuple(crop_size(torch.tensor([float(h), float(w)]), 1024).tolist()) == get_preprocess_shape(h, w, 1024)


def test_onnx_graph_contract(decoders: Decoders) -> None:
    loaded = decoders.get(fixture_dirs()[0])
    graph = onnx.load(str(loaded.onnx_path))
    onnx.checker.check_model(graph)
    # Only standard-domain ONNX ops, so onnxruntime-web can run it.
    assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17

    def dims(value: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = {i.name: i for i in graph.graph.input}
    assert tuple(inputs) == INPUT_NAMES
    for value in inputs.values():
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims(inputs["image_embeddings"]) == [1, 256, 64, 64]
    assert dims(inputs["point_coords"])[0] == 1 and dims(inputs["point_coords"])[2] == 2
    assert isinstance(dims(inputs["point_coords"])[1], str)  # dynamic number of points
    assert dims(inputs["point_labels"])[1] == dims(inputs["point_coords"])[1]
    assert dims(inputs["mask_input"]) == [1, 1, 256, 256]
    assert dims(inputs["has_mask_input"]) == [1]
    assert dims(inputs["orig_im_size"]) == [2]
    assert tuple(o.name for o in graph.graph.output) == OUTPUT_NAMES


def test_decoder_cache_reuses_file(decoders: Decoders) -> None:
    fixture = fixture_dirs()[0]
    loaded = decoders.get(fixture)
    spec = fixture_spec(fixture)
    assert loaded.onnx_path == decoder_onnx_path(spec, decoders.cache_dir)
    assert spec.key in loaded.onnx_path.name
    assert spec.checkpoint_sha256 is not None and spec.checkpoint_sha256[:16] in loaded.onnx_path.name
    before = loaded.onnx_path.stat().st_mtime_ns
    again = ensure_decoder_onnx(spec, loaded.model, fixture_checkpoint(fixture, spec), decoders.cache_dir)
    assert again == loaded.onnx_path and again.stat().st_mtime_ns == before
    assert not list(decoders.cache_dir.glob("*.tmp"))


def test_decoder_needs_a_prompt(decoders: Decoders) -> None:
    loaded = decoders.get(fixture_dirs()[0])
    with pytest.raises(ValueError):
        loaded.decoder.predict(embedding=np.zeros((1, 256, 64, 64), np.float32), orig_size=(10, 10), multimask=True)
