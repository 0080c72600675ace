"""Embedding payload: bytes per image against mask quality, on the real MobileSAM fixture embeddings.

For every option the embedding of each fixture image (tests/fixtures/mobile_sam) is encoded, decoded, and
fed to the app's ONNX decoder (the graph the browser runs) for every fixture prompt; the masks are compared
with the masks the same decoder gives for the float32 embedding (and with the official masks).

Options are either `embedding_codec` dtypes (encoded and decoded by the codec itself: sizes are whole
blobs, header included, and timings are the codec's) or, marked "sim", schemes that were measured but not
implemented: numpy quantise/dequantise plus zlib for the size (data bytes plus side information).

    .venv/bin/python benchmarks/payload.py            # print the table
    .venv/bin/python benchmarks/payload.py --write    # also (re)write the "Payload" section of RESULTS.md
"""

import argparse
import datetime
import math
import os
import platform
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Run as a script from anywhere: the repository root holds the packages imported below.
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.results import cpu_model, write_section  # noqa: E402
from segmentation.sam import embedding_codec  # noqa: E402
from segmentation.sam.build import build_model  # noqa: E402
from segmentation.sam.onnx_decoder import DecoderResult, OnnxDecoder, ensure_decoder_onnx  # noqa: E402
from segmentation.sam.registry import resolve_model  # noqa: E402
from tests.sam_reference import Case, load_cases, load_reference, load_reference_embedding, mask_ious  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "mobile_sam"
BUDGET = 1 << 20  # bytes per image, whole blob
MIN_IOU = 0.99
REPEATS = 5  # timings: best of


@dataclass
class Option:
    name: str
    description: str
    # embedding -> (bytes per image, reconstructed float32 embedding, encode s, decode s)
    run: Callable[[np.ndarray], tuple[int, np.ndarray, float, float]]
    simulated: bool = False


@dataclass
class Outcome:
    option: Option
    sizes: dict[str, int] = field(default_factory=dict)
    encode_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)
    max_abs_error: float = 0.0
    max_rms_error: float = 0.0
    worst_iou: float = 1.0
    worst_where: str = "–"
    worst_official_iou: float = 1.0
    failing: list[str] = field(default_factory=list)
    max_logits_diff: float = 0.0
    max_score_diff: float = 0.0


def best_time(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def codec_option(dtype: str, compression: str | None, description: str) -> Option:
    def run(embedding: np.ndarray) -> tuple[int, np.ndarray, float, float]:
        def encode() -> bytes:
            return embedding_codec.encode(embedding, model_key="mobile_sam", dtype=dtype, compression=compression)

        blob = encode()
        _, decoded = embedding_codec.decode(blob)
        return len(blob), decoded, best_time(encode), best_time(lambda: embedding_codec.decode(blob))

    suffix = "" if compression is None else f", compression={compression}"
    return Option(f"{dtype}{suffix}", description, run)


def _affine(embedding: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    planes = embedding.reshape(embedding.shape[1], -1).astype(np.float64)
    minimum = planes.min(axis=1, keepdims=True)
    scale = (planes.max(axis=1, keepdims=True) - minimum) / (2**bits - 1)
    q = np.rint((planes - minimum) / scale).astype(np.int64)
    return q.reshape(embedding.shape), scale, minimum


def simulated_affine(bits: int, delta: bool) -> Option:
    """Per-channel asymmetric `bits`-bit levels; 16-bit containers are split into byte planes."""

    def run(embedding: np.ndarray) -> tuple[int, np.ndarray, float, float]:
        started = time.perf_counter()
        q, scale, minimum = _affine(embedding, bits)
        stored = np.diff(q, axis=-2, prepend=0) % (1 << (8 if bits <= 8 else 16)) if delta else q
        if bits <= 8:
            raw = stored.astype(np.uint8).tobytes()
        else:
            pairs = stored.astype("<u2").view(np.uint8).reshape(-1, 2)
            raw = pairs[:, 0].tobytes() + pairs[:, 1].tobytes()
        size = len(zlib.compress(raw, embedding_codec.DEFLATE_LEVEL)) + 8 * scale.size
        elapsed = time.perf_counter() - started
        decoded = (minimum + scale * q.reshape(len(scale), -1)).astype(np.float32).reshape(embedding.shape)
        return size, decoded, elapsed, math.nan

    kind = "delta-rows + " if delta else ""
    return Option(
        f"sim: uint{bits} per-channel, {kind}deflate",
        f"{bits}-bit asymmetric per channel, {kind}deflate",
        run,
        simulated=True,
    )


def simulated_symmetric_int8() -> Option:
    def run(embedding: np.ndarray) -> tuple[int, np.ndarray, float, float]:
        started = time.perf_counter()
        planes = embedding.reshape(embedding.shape[1], -1).astype(np.float64)
        scale = np.abs(planes).max(axis=1, keepdims=True) / 127
        q = np.rint(planes / scale).astype(np.int8)
        size = len(zlib.compress(q.tobytes(), embedding_codec.DEFLATE_LEVEL)) + 4 * scale.size
        elapsed = time.perf_counter() - started
        return size, (q * scale).astype(np.float32).reshape(embedding.shape), elapsed, math.nan

    return Option("sim: int8 symmetric per-channel, deflate", "scale = max|x| / 127 per channel", run, simulated=True)


def options() -> list[Option]:
    return [
        codec_option("float32", "none", "exact, uncompressed (reference)"),
        codec_option("float16", "none", "the default (version 1 stored the same bytes)"),
        codec_option("float16", "deflate", "float16, deflated"),
        codec_option("uint8", "none", "per-channel affine uint8, delta-rows, not deflated"),
        codec_option("uint8", None, "per-channel affine uint8, delta-rows, deflated: within 1 MiB"),
        simulated_symmetric_int8(),
        simulated_affine(8, delta=False),
        simulated_affine(7, delta=True),
        simulated_affine(9, delta=True),
        simulated_affine(10, delta=False),
        simulated_affine(12, delta=False),
    ]


def decoder() -> OnnxDecoder:
    """The app's decoder export for mobile_sam, cached where the app caches it."""
    spec = resolve_model("mobile_sam")
    checkpoint = Path(os.environ.get("CHECKPOINT_DIR", REPO / "data" / "checkpoints")) / spec.checkpoint_filename
    cache = Path(os.environ.get("DECODER_DIR", REPO / "data" / "decoders"))
    return OnnxDecoder(ensure_decoder_onnx(spec, build_model(spec, checkpoint), checkpoint, cache))


def predict(onnx: OnnxDecoder, case: Case, embedding: np.ndarray) -> list[DecoderResult]:
    return [
        onnx.predict(
            embedding=embedding,
            orig_size=(case.height, case.width),
            points=prompt.points,
            labels=prompt.labels,
            box=prompt.box,
            multimask=prompt.multimask,
        )
        for prompt in case.prompts
    ]


def measure() -> list[Outcome]:
    onnx = decoder()
    cases = load_cases(FIXTURE)
    embeddings: dict[str, np.ndarray] = {}
    for case in cases:
        embedding = load_reference_embedding(case)
        if embedding is None:
            raise SystemExit(f"{case.image}: the fixture keeps no embedding")
        embeddings[case.stem] = embedding
    baseline = {case.stem: predict(onnx, case, embeddings[case.stem]) for case in cases}
    outcomes = []
    for option in options():
        outcome = Outcome(option)
        for case in cases:
            embedding = embeddings[case.stem]
            size, decoded, encode_s, decode_s = option.run(embedding)
            outcome.sizes[case.stem] = size
            outcome.encode_s.append(encode_s)
            outcome.decode_s.append(decode_s)
            outcome.max_abs_error = max(outcome.max_abs_error, float(np.abs(decoded - embedding).max()))
            rms = float(np.sqrt(np.mean((decoded.astype(np.float64) - embedding) ** 2)))
            outcome.max_rms_error = max(outcome.max_rms_error, rms)
            for prompt, reference, result in zip(
                case.prompts, baseline[case.stem], predict(onnx, case, decoded), strict=True
            ):
                where = f"{case.stem}/{prompt.name}"
                ious = mask_ious(reference.masks, result.masks)
                official = mask_ious(load_reference(case, prompt).masks, result.masks)
                if ious.min() < outcome.worst_iou:
                    outcome.worst_iou, outcome.worst_where = float(ious.min()), where
                if ious.min() < MIN_IOU:
                    outcome.failing.append(where)
                outcome.worst_official_iou = min(outcome.worst_official_iou, float(official.min()))
                logits_diff = np.abs(reference.low_res_logits - result.low_res_logits).max()
                outcome.max_logits_diff = max(outcome.max_logits_diff, float(logits_diff))
                score_diff = np.abs(reference.scores - result.scores).max()
                outcome.max_score_diff = max(outcome.max_score_diff, float(score_diff))
        outcomes.append(outcome)
        print(f"measured {option.name}", file=sys.stderr)
    return outcomes


def milliseconds(values: list[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    return f"{1000 * max(finite):.0f}" if finite else "–"


def report(outcomes: list[Outcome]) -> str:
    stems = list(outcomes[0].sizes)
    prompts = sum(len(case.prompts) for case in load_cases(FIXTURE))
    lines = [
        "## Payload",
        "",
        f"`benchmarks/payload.py`, {datetime.date.today().isoformat()}, {cpu_model()} ({os.cpu_count()} CPUs),"
        f" Python {platform.python_version()}, numpy {np.__version__}.",
        "",
        f"The real MobileSAM embeddings of the {len(stems)} fixture images (1x256x64x64 float32, 4 MiB each)"
        f" through each option, then the app's ONNX decoder for all {prompts} fixture prompts. Sizes are"
        f" bytes per image (budget {BUDGET:,} = 1 MiB, whole blob); IoU is the worst per-mask IoU against"
        ' the masks of the float32 embedding ("official": against the official MobileSAM masks); logits is the'
        " max abs diff of the 256x256 low-res logits, score of the predicted IoU, against float32."
        " Times: slowest image, best of 5, Python (encode includes deflate; decode includes inflate)."
        ' "sim" rows were measured with numpy + zlib and are not formats the codec writes.',
        "",
        "| option | "
        + " | ".join(f"{s} bytes" for s in stems)
        + " | ≤ 1 MiB | max abs err | rms err | worst IoU (where) | official | prompts < 0.99 | logits | score"
        " | encode ms | decode ms |",
        "|---|" + "---:|" * len(stems) + ":-:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        fits = "yes" if max(o.sizes.values()) <= BUDGET else "no"
        lines.append(
            f"| {o.option.name} | "
            + " | ".join(f"{o.sizes[s]:,}" for s in stems)
            + f" | {fits} | {o.max_abs_error:.2e} | {o.max_rms_error:.1e}"
            f" | {o.worst_iou:.4f} ({o.worst_where}) | {o.worst_official_iou:.4f}"
            f" | {len(o.failing)}/{prompts} | {o.max_logits_diff:.4f} | {o.max_score_diff:.4f}"
            f" | {milliseconds(o.encode_s)} | {milliseconds(o.decode_s)} |"
        )
    lines += ["", *CONCLUSION, ""]
    return "\n".join(lines)


CONCLUSION = [
    "Default: `float16`, not deflated (format version 2): 2,097,312 bytes per image (deflate saves only ~10%"
    " for ~60 ms of worker CPU per image), every fixture mask at IoU"
    " ≥ 0.9989 against float32. Exactness comes first, so the 1 MiB target is not the default: `uint8`"
    " (setting `EMBEDDING_DTYPE=uint8`: per-channel affine 8-bit levels with float32 scale and minimum per"
    " channel, rows stored as differences to the row above modulo 256, deflated) is 0.74-0.83 MiB per"
    " image, the only codec option within 1 MiB, for deployments that trade a few threshold pixels for"
    " bandwidth.",
    "",
    "Not met: IoU ≥ 0.99 for every fixture prompt within 1 MiB. With uint8, 13 of 15 prompts stay"
    " ≥ 0.99 (astronaut's worst: box_point, 0.9919, 17 pixels differ); coffee/box is 0.9714 (14 pixels of a"
    " 477-pixel mask) and chelsea/box_point 0.9867 (97 pixels of 7,317). They are ill-conditioned: pixels"
    " whose logits lie within ±0.05 of the threshold amount to 6% (coffee/box) and 18% (chelsea/box_point)"
    " of the mask's area, so a handful of flipped pixels moves their IoU by a percent. They need an rms"
    " error of the embedding around 1e-4 or less (uint8: 6.2e-4 gives 0.971, uint9: 3e-4 gives 0.983,"
    " uint10: 1.5e-4 gives 0.992), and 10-bit levels cost 1.18-1.23 MB deflated; even an ideal per-channel"
    " entropy coder with row or median-edge prediction would need 0.93-1.05 MB (astronaut: 1.05 MB, over"
    " the budget). Symmetric int8, 7 bits, and"
    " rounding that minimises the decoder's sensitivity-weighted error (GPTQ-style, measured separately)"
    " were worse or no better than uint8.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="(re)write the Payload section of RESULTS.md")
    args = parser.parse_args()
    section = report(measure())
    print(section)
    if args.write:
        write_section("Payload", section)


if __name__ == "__main__":
    main()
