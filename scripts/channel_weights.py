"""Measure how sensitive the mask decoder is to each embedding channel; write segmentation/sam/channel_weights.json.

The rans embedding format (segmentation/sam/embedding_codec.py) quantises channel c with step
RANS_STEP / weight[c]. For the least mask error per bit, the rounding noise of each channel should be
inversely proportional to how strongly the decoder's logits respond to it (a per-channel uniform
quantiser at high rate: step proportional to 1 / sqrt(sensitivity)). This script estimates that
sensitivity with random probes (Hutchinson): for random prompts on each image, the gradient of
sum(noise * near * logits) with respect to the embedding, where near = 1 / (1 + logits^2) weights the
pixels near the mask threshold (those that flip) and noise is standard normal; the mean square of that
gradient over probes and positions is channel c's sensitivity, and weight[c] = sqrt(sensitivity[c]).

Use images that are NOT the ones the payload is evaluated on (tests/fixtures/mobile_sam): fitting the
weights to the fixture prompts would flatter the benchmark. The committed mobile_sam weights come from

    .venv/bin/python scripts/channel_weights.py tests/fixtures/sam_tiny/camera_gray.png \\
        /usr/lib/rabbitmq/lib/rabbitmq_server-3.10.8/plugins/rabbitmq_web_mqtt_examples-3.10.8/priv/bunny.png \\
        <rust embedded-book>/assets/f3.jpg <rust embedded-book>/assets/verify.jpeg \\
        <google-cloud-sdk jetty demo>/images/jetty-pic.png

(whatever photos the machine had: a grey-scale camera man, a cartoon, two circuit-board photos and a
banner; 30 prompts each, half 1-3 points, half boxes), ~8 minutes on 2 CPU cores.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from segmentation.sam.build import build_model  # noqa: E402
from segmentation.sam.embedding_codec import CHANNEL_WEIGHTS  # noqa: E402
from segmentation.sam.predictor import encode_image  # noqa: E402
from segmentation.sam.registry import resolve_model  # noqa: E402
from segmentation.sam.sam import Sam  # noqa: E402

PROBES_PER_PROMPT = 2


def random_prompt(
    model: Sam, rng: np.random.Generator, height: float, width: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse and dense prompt embeddings: 1-3 points (the first positive, the rest 3/4 positive) or a box,
    in the 1024-pixel frame the image is resized into."""
    if rng.random() < 0.5:
        count = int(rng.integers(1, 4))
        points = torch.tensor(rng.random((1, count, 2)) * [width, height], dtype=torch.float32)
        labels = torch.tensor((rng.random((1, count)) < 0.75).astype(np.int32))
        labels[0, 0] = 1
        return model.prompt_encoder(points=(points, labels), boxes=None, masks=None)
    x0, x1 = np.sort(rng.random(2) * width)
    y0, y1 = np.sort(rng.random(2) * height)
    box = torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32)
    return model.prompt_encoder(points=None, boxes=box, masks=None)


def sensitivity(model: Sam, images: list[Path], prompts: int, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dense_pe = model.prompt_encoder.get_dense_pe()
    total, probes = np.zeros(model.prompt_encoder.embed_dim), 0
    for path in images:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        scale = model.img_size / max(rgb.shape[:2])
        embedding = torch.tensor(encode_image(model, rgb), requires_grad=True)
        for _ in range(prompts):
            sparse, dense = random_prompt(model, rng, rgb.shape[0] * scale, rgb.shape[1] * scale)
            logits, _ = model.mask_decoder.predict_masks(embedding, dense_pe, sparse, dense)
            near = 1 / (1 + logits.detach() ** 2)
            for _ in range(PROBES_PER_PROMPT):
                probe = torch.randn_like(logits) * near
                (gradient,) = torch.autograd.grad((probe * logits).sum(), embedding, retain_graph=True)
                total += (gradient[0].double() ** 2).sum(dim=(1, 2)).numpy()
                probes += 1
        print(f"{path}: {probes} probes so far", file=sys.stderr)
    return total / probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, help="photos that are not payload fixtures")
    parser.add_argument("--model", default="mobile_sam")
    parser.add_argument("--checkpoint", type=Path, default=REPO / "data" / "checkpoints" / "mobile_sam.pt")
    parser.add_argument("--prompts", type=int, default=30, help="random prompts per image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    spec = resolve_model(args.model)
    model = build_model(spec, args.checkpoint).eval()
    weights = np.sqrt(sensitivity(model, args.images, args.prompts, args.seed))
    weights /= np.exp(np.log(weights).mean())
    table = json.loads(CHANNEL_WEIGHTS.read_text()) if CHANNEL_WEIGHTS.exists() else {}
    table[spec.key] = {
        "images": [path.name for path in args.images],
        "prompts_per_image": args.prompts,
        "seed": args.seed,
        "weights": [float(f"{w:.5g}") for w in weights],
    }
    CHANNEL_WEIGHTS.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {spec.key} to {CHANNEL_WEIGHTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
