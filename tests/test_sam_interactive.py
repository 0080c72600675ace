"""The annotator's interactive decoding, in Python: the browser's two-graph split (prepare + prompt)
against the full decoder, and the server-side replay of a saved click chain (with the first click's
chosen candidate) against SamPredictor."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from segmentation.sam import interactive
from segmentation.sam.build import build_model
from segmentation.sam.onnx_decoder import (
    PREPARE_INPUTS,
    PROMPT_INPUTS,
    OnnxDecoder,
    build_decoder_inputs,
    ensure_decoder_onnx,
    ensure_interactive_onnx,
    export_interactive,
)
from segmentation.sam.predictor import SamPredictor
from segmentation.sam.sam import Sam
from tests.sam_reference import (
    MIN_MASK_IOU,
    Case,
    Prompt,
    all_prompts,
    case_id,
    fixture_checkpoint,
    fixture_spec,
    load_reference,
    load_reference_embedding,
    mask_ious,
)

# Official embeddings only: the point here is the decoder side.
PROMPTS = [(c, p) for c, p in all_prompts() if c.embedding]


# The shipped prompt graph's tanh-form GELU (UPSCALE_GELU) moves low-res logits by up to ~0.015 on the
# fixtures; the exact-GELU export of the same graph must match the full graph to float rounding.
TANH_GELU_LOGITS_ATOL = 0.05


class Models:
    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.loaded: dict[Path, tuple[Sam, OnnxDecoder, ort.InferenceSession, ort.InferenceSession]] = {}
        self.exact: dict[Path, ort.InferenceSession] = {}

    def get(self, fixture: Path) -> tuple[Sam, OnnxDecoder, ort.InferenceSession, ort.InferenceSession]:
        if fixture not in self.loaded:
            spec = fixture_spec(fixture)
            checkpoint = fixture_checkpoint(fixture, spec)
            model = build_model(spec, checkpoint)
            full = OnnxDecoder(ensure_decoder_onnx(spec, model, checkpoint, self.cache_dir))
            prepare, prompt = (
                ort.InferenceSession(str(ensure_interactive_onnx(spec, model, checkpoint, self.cache_dir, g)))
                for g in ("prepare", "prompt")
            )
            self.loaded[fixture] = (model, full, prepare, prompt)
        return self.loaded[fixture]

    def exact_prompt(self, fixture: Path) -> ort.InferenceSession:
        """The prompt graph with both upscaling GELUs exact (erf), as the full graph computes them."""
        if fixture not in self.exact:
            path = self.cache_dir / f"{fixture.name}.prompt.exact.onnx"
            export_interactive(self.get(fixture)[0], "prompt", path, gelu=("none", "none"))
            self.exact[fixture] = ort.InferenceSession(str(path))
        return self.exact[fixture]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(tmp_path_factory.mktemp("interactive"))


def embedding_of(case: Case) -> np.ndarray:
    embedding = load_reference_embedding(case)
    assert embedding is not None
    return embedding


def run_pair(prepare: ort.InferenceSession, prompt: ort.InferenceSession, feeds: dict) -> tuple[np.ndarray, ...]:
    cache = prepare.run(None, {name: feeds[name] for name in PREPARE_INPUTS})
    iou, low_res = prompt.run(
        None, dict(zip(PROMPT_INPUTS, [*cache, feeds["point_coords"], feeds["point_labels"]], strict=False))
    )
    return iou, low_res


def upscale(low_res: np.ndarray, size: tuple[int, int], model: Sam) -> np.ndarray:
    """Low-res logits (C, 256, 256) -> bool masks at `size`, as SamPredictor postprocesses."""
    from segmentation.sam.transforms import get_preprocess_shape

    logits = model.postprocess_masks(torch.from_numpy(low_res)[None], get_preprocess_shape(*size, 1024), size)
    return (logits[0] > 0).numpy()


@pytest.mark.parametrize(("case", "prompt"), PROMPTS, ids=[case_id(c, p) for c, p in PROMPTS])
def test_prepare_prompt_pair_matches_full_graph(models: Models, case: Case, prompt: Prompt) -> None:
    model, full, prepare, prompt_graph = models.get(case.fixture)
    embedding = embedding_of(case)
    size = (case.height, case.width)
    feeds = build_decoder_inputs(
        embedding=embedding, orig_size=size, points=prompt.points, labels=prompt.labels, box=prompt.box
    )
    exact_graph = models.exact_prompt(case.fixture)
    _, full_iou, full_low = full.run(feeds)
    iou, low_res = run_pair(prepare, prompt_graph, feeds)
    assert iou.shape == (1, 4) and low_res.shape == (1, 4, 256, 256)
    assert np.abs(iou - full_iou).max() <= 1e-4
    assert np.abs(low_res - full_low).max() <= TANH_GELU_LOGITS_ATOL
    exact_iou, exact_low = run_pair(prepare, exact_graph, feeds)
    assert np.abs(exact_iou - full_iou).max() <= 1e-4
    assert np.abs(exact_low - full_low).max() <= 1e-3

    # The official masks, from our low-res logits upscaled as the browser does at commit time.
    ref = load_reference(case, prompt)
    keep = slice(1, 4) if prompt.multimask else slice(0, 1)
    assert mask_ious(upscale(low_res[0, keep], size, model), ref.masks).min() >= MIN_MASK_IOU

    # With the best low-res mask fed back (a refining click), as the full graph.
    feeds["mask_input"] = full_low[:, 1 + int(np.argmax(full_iou[0, 1:]))][None].astype(np.float32)
    feeds["has_mask_input"] = np.ones(1, dtype=np.float32)
    _, full_iou, full_low = full.run(feeds)
    iou, low_res = run_pair(prepare, prompt_graph, feeds)
    assert np.abs(iou - full_iou).max() <= 1e-4
    assert np.abs(low_res - full_low).max() <= TANH_GELU_LOGITS_ATOL
    exact_iou, exact_low = run_pair(prepare, exact_graph, feeds)
    assert np.abs(exact_iou - full_iou).max() <= 1e-4
    assert np.abs(exact_low - full_low).max() <= 1e-3


def torch_chain(
    model: Sam, embedding: np.ndarray, size: tuple[int, int], points: list, box: list | None, candidate: int = 0
) -> tuple:
    """The annotator's rule written with SamPredictor directly (the reference for replay)."""
    predictor = SamPredictor(model)
    predictor.set_embedding(embedding, size)
    box_array = None if box is None else np.array(box)
    low_res = None
    counts = ([0] if box is not None else []) + list(range(1, len(points) + 1))
    for count in counts:
        chosen = np.array(points[:count], dtype=np.float64).reshape(-1, 3)
        multimask = low_res is None and box is None
        masks, scores, logits = predictor.predict(
            point_coords=chosen[:, :2] if count else None,
            point_labels=chosen[:, 2] if count else None,
            box=box_array,
            mask_input=low_res,
            multimask_output=multimask,
        )
        best = int(np.argsort(-scores)[candidate]) if multimask else 0
        low_res = logits[best][None]
    return masks[best], float(scores[best])


CHAINS = [(c, p) for c, p in PROMPTS if p.name in ("pos_neg", "three_points", "box_point", "box")]


@pytest.mark.parametrize(("case", "prompt"), CHAINS, ids=[case_id(c, p) for c, p in CHAINS])
def test_replay_follows_the_annotator_rule(models: Models, case: Case, prompt: Prompt) -> None:
    model, full, _, _ = models.get(case.fixture)
    embedding = embedding_of(case)
    size = (case.height, case.width)
    points = []
    if prompt.points is not None and prompt.labels is not None:
        points = [[*xy, label] for xy, label in zip(prompt.points, prompt.labels, strict=True)]
    box = None if prompt.box is None else list(prompt.box)
    steps = list(interactive.steps(full, embedding=embedding, orig_size=size, points=points, box=box))
    assert len(steps) == len(points) + (box is not None)
    mask, score = torch_chain(model, embedding, size, points, box)
    last = interactive.replay(full, embedding=embedding, orig_size=size, points=points, box=box)
    assert last.mask.shape == size and last.low_res.shape == (256, 256)
    assert mask_ious(last.mask[None], mask[None])[0] >= MIN_MASK_IOU
    assert abs(last.score - score) <= 1e-3
    np.testing.assert_array_equal(steps[-1].mask, last.mask)


def chain_case(name: str) -> tuple[Case, list, tuple[int, int], np.ndarray]:
    case, prompt = next((c, p) for c, p in PROMPTS if case_id(c, p) == name)
    assert prompt.points is not None and prompt.labels is not None
    points = [[*xy, label] for xy, label in zip(prompt.points, prompt.labels, strict=True)]
    return case, points, (case.height, case.width), embedding_of(case)


# Chains whose first click's candidates lead to clearly different objects.
CHOSEN = ["mobile_sam/astronaut/pos_neg", "mobile_sam/chelsea/pos_neg"]


@pytest.mark.parametrize("candidate", [1, 2])
@pytest.mark.parametrize("name", CHOSEN)
def test_replay_refines_the_chosen_candidate(models: Models, name: str, candidate: int) -> None:
    case, points, size, embedding = chain_case(name)
    model, full, _, _ = models.get(case.fixture)
    chosen = interactive.replay(full, embedding=embedding, orig_size=size, points=points, candidate=candidate)
    best = interactive.replay(full, embedding=embedding, orig_size=size, points=points)
    assert mask_ious(chosen.mask[None], best.mask[None])[0] < 0.9

    # By hand: the first click's candidates best first, the chosen one's logits fed to the second click.
    first = full.predict(
        embedding=embedding, orig_size=size, points=np.array([points[0][:2]]), labels=np.array([1.0]), multimask=True
    )
    pick = int(np.argsort(-first.scores)[candidate])
    second = full.predict(
        embedding=embedding,
        orig_size=size,
        points=np.array([p[:2] for p in points]),
        labels=np.array([p[2] for p in points]),
        mask_input=first.low_res_logits[pick][None, None],
        multimask=False,
    )
    np.testing.assert_array_equal(chosen.mask, second.masks[0])
    assert chosen.score == pytest.approx(float(second.scores[0]))
    np.testing.assert_array_equal(chosen.low_res, second.low_res_logits[0])

    mask, score = torch_chain(model, embedding, size, points, None, candidate)
    assert mask_ious(chosen.mask[None], mask[None])[0] >= MIN_MASK_IOU
    assert abs(chosen.score - score) <= 1e-3


def test_a_single_click_replays_as_its_chosen_candidate(models: Models) -> None:
    case, points, size, embedding = chain_case(CHOSEN[0])
    _, full, _, _ = models.get(case.fixture)
    multi = full.predict(
        embedding=embedding, orig_size=size, points=np.array([points[0][:2]]), labels=np.array([1.0]), multimask=True
    )
    for candidate, index in enumerate(np.argsort(-multi.scores)):
        step = interactive.replay(full, embedding=embedding, orig_size=size, points=points[:1], candidate=candidate)
        np.testing.assert_array_equal(step.mask, multi.masks[index])


def test_a_candidate_needs_a_first_click_to_choose_from(models: Models) -> None:
    case, points, size, embedding = chain_case(CHOSEN[0])
    _, full, _, _ = models.get(case.fixture)
    box = [0.0, 0.0, 100.0, 100.0]
    for bad in (-1, 3):
        with pytest.raises(ValueError, match="0 \\(the best\\), 1 or 2"):
            interactive.replay(full, embedding=embedding, orig_size=size, points=points, candidate=bad)
    with pytest.raises(ValueError, match="starts with a box"):
        interactive.replay(full, embedding=embedding, orig_size=size, points=points, box=box, candidate=1)
    with pytest.raises(ValueError, match="starts with a box"):
        interactive.replay(full, embedding=embedding, orig_size=size, points=[], box=box, candidate=2)
    interactive.replay(full, embedding=embedding, orig_size=size, points=points, box=box, candidate=0)


def test_first_click_is_the_best_multimask_candidate(models: Models) -> None:
    case, prompt = next((c, p) for c, p in PROMPTS if p.name == "one_point")
    _, full, _, _ = models.get(case.fixture)
    embedding = embedding_of(case)
    size = (case.height, case.width)
    assert prompt.points is not None
    points = [[*prompt.points[0], 1.0]]
    step = interactive.replay(full, embedding=embedding, orig_size=size, points=points)
    multi = full.predict(
        embedding=embedding, orig_size=size, points=prompt.points, labels=prompt.labels, multimask=True
    )
    best = int(np.argmax(multi.scores))
    np.testing.assert_array_equal(step.mask, multi.masks[best])
    assert step.score == pytest.approx(float(multi.scores[best]))
    with pytest.raises(ValueError):
        interactive.replay(full, embedding=embedding, orig_size=size, points=[])


def test_interactive_export_rejects_unknown_graph(models: Models, tmp_path: Path) -> None:
    case = PROMPTS[0][0]
    model = models.get(case.fixture)[0]
    with pytest.raises(ValueError):
        export_interactive(model, "hover", tmp_path / "x.onnx")
    # Only standard ops, so onnxruntime-web runs both graphs.
    import onnx

    for graph in ("prepare", "prompt"):
        path = tmp_path / f"{graph}.onnx"
        export_interactive(model, graph, path)
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
