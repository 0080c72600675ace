"""In Chromium, our decoder worker (onnxruntime-web, the app's ONNX export) fed the official embedding
reproduces the official low-res logits and IoU predictions for every fixture prompt."""

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
from tests.e2e.conftest import Stack
from tests.sam_reference import fixture_checkpoint

pytestmark = pytest.mark.e2e

RUN_PROMPTS = """
async ({ decoderB64, embeddingB64, prompts }) => {
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
  await decoder.init({ decoderUrl, model: "parity", ortBase: "/static/vendor/ort/" });
  await decoder.setEmbedding(1, fromB64(embeddingB64).buffer);
  const results = [];
  for (const prompt of prompts) {
    const { candidates } = await decoder.decode({ imageId: 1, maskInput: null, ...prompt });
    results.push(candidates.map((c) => ({ token: c.token, score: c.score, lowRes: toB64(c.lowRes) })));
  }
  return results;
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


@pytest.mark.parametrize(
    ("folder", "case"), fixture_cases(), ids=lambda v: v.name if isinstance(v, Path) else v["image"]
)
def test_browser_decoder_parity(page: Page, stack: Stack, folder: Path, case: dict, tmp_path: Path) -> None:
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
    results = page.evaluate(
        RUN_PROMPTS,
        {
            "decoderB64": base64.b64encode(decoder_file.read_bytes()).decode(),
            "embeddingB64": base64.b64encode(blob).decode(),
            "prompts": prompts,
        },
    )
    for prompt, candidates in zip(case["prompts"], results, strict=True):
        official = np.load(folder / prompt["outputs"])
        official_logits = official["low_res_logits"].reshape(-1, 256, 256)
        official_iou = official["iou"].reshape(-1)
        first_token = 1 if prompt["multimask"] else 0
        assert len(candidates) == len(official_iou)
        for candidate in candidates:
            index = candidate["token"] - first_token
            logits = np.frombuffer(base64.b64decode(candidate["lowRes"]), dtype=np.float32).reshape(256, 256)
            assert np.abs(logits - official_logits[index]).max() <= 1e-3, prompt["name"]
            assert abs(candidate["score"] - official_iou[index]) <= 1e-3, prompt["name"]
