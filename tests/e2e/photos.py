"""Distinct photo-like images for bulk uploads, made from the fixture photos."""

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

# Not tests.conftest's FIXTURES: importing that needs Django set up, and scripts/ use this too.
MOBILE_SAM = Path(__file__).resolve().parent.parent / "fixtures" / "mobile_sam"
PHOTOS = [MOBILE_SAM / f"{name}.png" for name in ("astronaut", "chelsea", "coffee")]


def make_photos(count: int, folder: Path, seed: int = 0) -> list[Path]:
    """`count` files with different bytes: a crop, a rotation, a scale to 300-800 px and colour shifts of
    a fixture photo; every other one JPEG, the rest PNG."""
    rng = random.Random(seed)
    sources = [Image.open(path).convert("RGB") for path in PHOTOS]
    paths = []
    for index in range(count):
        source = sources[index % len(sources)]
        width, height = source.size
        crop_w, crop_h = int(width * rng.uniform(0.55, 1.0)), int(height * rng.uniform(0.55, 1.0))
        left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
        image = source.crop((left, top, left + crop_w, top + crop_h))
        image = image.rotate(rng.uniform(-25, 25), resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))
        side = rng.randint(300, 800)
        scale = side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.5, 1.6))
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))
        shift = np.array([rng.randint(-30, 30) for _ in range(3)], dtype=np.int16)
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + shift, 0, 255).astype(np.uint8))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if index % 2:
            path = folder / f"photo_{index:03d}.png"
            image.save(path, format="PNG")
        else:
            path = folder / f"photo_{index:03d}.jpg"
            image.save(path, format="JPEG", quality=rng.randint(80, 95))
        paths.append(path)
    return paths
