"""In Chromium, our decoder worker (onnxruntime-web, the app's ONNX export) fed the official embedding
reproduces the official low-res logits and IoU predictions for every fixture prompt, on wasm and on
WebGPU (through SwiftShader, Chromium's software GPU: slow, so one image's prompts), and picks and falls
back between the two as the worker's rule says."""

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page

from segmentation.sam.build import build_model
from segmentation.sam.embedding_codec import encode as encode_embedding
from segmentation.sam.onnx_decoder import export_decoder
from segmentation.sam.registry import resolve_model
from tests.conftest import FIXTURES
from tests.e2e.conftest import Stack, log_in
from tests.sam_reference import fixture_checkpoint, mask_ious

pytestmark = pytest.mark.e2e

RUN_PROMPTS = """
async ({ decoderB64, embeddingB64, prompts, backend }) => {
  const fromB64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const toB64 = (floats) => {
    const bytes = new Uint8Array(floats.buffer, floats.byteOffset, floats.byteLength);
    let out = "";
    for (let i = 0; i < bytes.length; i += 0x8000) out += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(out);
  };
  const { Decoder } = await import("/static/js/decoder.js");
  const decoder = new Decoder("/static/js/decoder-worker.js");
  const decoderUrl = URL.createObjectURL(new Blob([fromB64(decoderB64)]));
  const info = await decoder.init({ decoderUrl, model: "parity", ortBase: "/static/vendor/ort/", backend });
  await decoder.setEmbedding(1, fromB64(embeddingB64).buffer);
  const results = [];
  for (const prompt of prompts) {
    const { candidates } = await decoder.decode({ imageId: 1, maskInput: null, ...prompt });
    results.push(candidates.map((c) => ({ token: c.token, score: c.score, lowRes: toB64(c.lowRes) })));
  }
  return { backend: info.backend, results };
}
"""


def fixture_cases() -> list[tuple[Path, dict]]:
    cases = []
    for folder in (FIXTURES / "sam_tiny", FIXTURES / "mobile_sam"):
        manifest = json.loads((folder / "manifest.json").read_text())
        cases += [(folder, case) for case in manifest["cases"] if case["embedding"]]
    return cases


def load_embedding(path: Path) -> np.ndarray:
    return np.load(path)["embedding"] if path.suffix == ".npz" else np.load(path)


def run_case(page: Page, stack: Stack, folder: Path, case: dict, tmp_path: Path, backend: str | None) -> dict:
    """Every prompt of `case` through the decoder worker on `backend` -> {backend, results}."""
    spec = resolve_model(str(folder / "model.json"))
    checkpoint = fixture_checkpoint(folder, spec)
    decoder_file = tmp_path / "decoder.onnx"
    export_decoder(build_model(spec, checkpoint), decoder_file)
    blob = encode_embedding(load_embedding(folder / case["embedding"]), model_key="parity", dtype="float32")
    prompts = [
        {
            "points": [[x, y, label] for (x, y), label in zip(p["points"] or [], p["labels"] or [], strict=True)],
            "box": p["box"],
            "multimask": p["multimask"],
            "height": case["height"],
            "width": case["width"],
        }
        for p in case["prompts"]
    ]
    page.goto(f"{stack.url}/accounts/login/")
    return page.evaluate(
        RUN_PROMPTS,
        {
            "decoderB64": base64.b64encode(decoder_file.read_bytes()).decode(),
            "embeddingB64": base64.b64encode(blob).decode(),
            "prompts": prompts,
            "backend": backend,
        },
    )


def assert_official(folder: Path, case: dict, results: list, atol: float = 1e-3) -> None:
    """Logits within `atol` of the official ones, scores within 1e-3, low-res masks at IoU >= 0.99."""
    for prompt, candidates in zip(case["prompts"], results, strict=True):
        official = np.load(folder / prompt["outputs"])
        official_logits = official["low_res_logits"].reshape(-1, 256, 256)
        official_iou = official["iou"].reshape(-1)
        first_token = 1 if prompt["multimask"] else 0
        assert len(candidates) == len(official_iou)
        for candidate in candidates:
            index = candidate["token"] - first_token
            logits = np.frombuffer(base64.b64decode(candidate["lowRes"]), dtype=np.float32).reshape(256, 256)
            assert np.abs(logits - official_logits[index]).max() <= atol, prompt["name"]
            assert abs(candidate["score"] - official_iou[index]) <= 1e-3, prompt["name"]
            assert mask_ious(logits[None] > 0, official_logits[index][None] > 0).min() >= 0.99, prompt["name"]


@pytest.mark.parametrize(
    ("folder", "case"), fixture_cases(), ids=lambda v: v.name if isinstance(v, Path) else v["image"]
)
def test_browser_decoder_parity(page: Page, stack: Stack, folder: Path, case: dict, tmp_path: Path) -> None:
    run = run_case(page, stack, folder, case, tmp_path, backend=None)
    assert run["backend"] == "wasm"  # this Chromium runs with --disable-gpu: no adapter
    assert_official(folder, case, run["results"])


def test_browser_decoder_parity_on_webgpu(webgpu_page: Page, stack: Stack, tmp_path: Path) -> None:
    folder, case = next((f, c) for f, c in fixture_cases() if f.name == "mobile_sam" and c["image"] == "astronaut.png")
    case = {**case, "prompts": [p for p in case["prompts"] if p["name"] in ("one_point", "box_point")]}
    run = run_case(webgpu_page, stack, folder, case, tmp_path, backend="webgpu")
    assert run["backend"] == "webgpu"
    # GPU kernels sum in another order: up to 5e-3 off under SwiftShader (box_point), masks the same.
    assert_official(folder, case, run["results"], atol=1e-2)


RUN_INTERACTIVE = """
async ({ embeddingB64, prompt, backend }) => {
  const fromB64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const { Decoder } = await import("/static/js/decoder.js");
  const decoder = new Decoder("/static/js/decoder-worker.js");
  const graph = (name) => `/api/v1/models/mobile_sam/decoder.onnx?graph=${name}`;
  const graphs = { prepare: graph("prepare"), prompt: graph("prompt") };
  const info = await decoder.init({ graphs, model: "mobile_sam", ortBase: "/static/vendor/ort/", backend });
  await decoder.setEmbedding(1, fromB64(embeddingB64).buffer);
  const { candidates } = await decoder.decode({ imageId: 1, maskInput: null, ...prompt });
  const plain = candidates.map((c) => ({ token: c.token, score: c.score, lowRes: Array.from(c.lowRes) }));
  return { backend: info.backend, candidates: plain };
}
"""


def test_interactive_graphs_run_on_webgpu(webgpu_page: Page, stack: Stack) -> None:
    # The annotator's own prepare + prompt pair (what a GPU machine runs on hover): every operator has
    # a WebGPU kernel or a CPU fallback that gives the same answer.
    folder, case = next((f, c) for f, c in fixture_cases() if f.name == "mobile_sam" and c["image"] == "astronaut.png")
    prompt = next(p for p in case["prompts"] if p["name"] == "one_point")
    blob = encode_embedding(load_embedding(folder / case["embedding"]), model_key="mobile_sam", dtype="float32")
    log_in(webgpu_page, stack)
    points = [[x, y, label] for (x, y), label in zip(prompt["points"], prompt["labels"], strict=True)]
    args = {"points": points, "box": None, "multimask": True, "height": case["height"], "width": case["width"]}
    run = webgpu_page.evaluate(
        RUN_INTERACTIVE,
        {"embeddingB64": base64.b64encode(blob).decode(), "prompt": args, "backend": "webgpu"},
    )
    assert run["backend"] == "webgpu"
    official = np.load(folder / prompt["outputs"])
    official_logits = official["low_res_logits"].reshape(-1, 256, 256)
    assert len(run["candidates"]) == 3
    for candidate in run["candidates"]:
        logits = np.asarray(candidate["lowRes"], dtype=np.float32).reshape(256, 256)
        index = candidate["token"] - 1
        assert abs(candidate["score"] - official["iou"].reshape(-1)[index]) <= 1e-3
        assert mask_ious(logits[None] > 0, official_logits[index][None] > 0).min() >= 0.99


CHOOSE_BACKEND = """
async (backend) => {
  const { Decoder } = await import("/static/js/decoder.js");
  const decoder = new Decoder("/static/js/decoder-worker.js");
  const graph = (name) => `/api/v1/models/mobile_sam/decoder.onnx?graph=${name}`;
  const graphs = { prepare: graph("prepare"), prompt: graph("prompt") };
  return (await decoder.init({ graphs, model: "mobile_sam", ortBase: "/static/vendor/ort/", backend })).backend;
}
"""


def test_decoder_prefers_wasm_over_a_software_gpu(webgpu_page: Page, stack: Stack) -> None:
    # SwiftShader is an adapter, but an emulated one: wasm is many times faster.
    log_in(webgpu_page, stack)
    assert webgpu_page.evaluate(CHOOSE_BACKEND, None) == "wasm"


def test_decoder_falls_back_to_wasm_without_a_gpu(page: Page, stack: Stack) -> None:
    log_in(page, stack)
    assert page.evaluate(CHOOSE_BACKEND, "webgpu") == "wasm"
