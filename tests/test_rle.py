import numpy as np
import pytest
from pycocotools import mask as coco_mask

from segmentation import rle


@pytest.mark.parametrize("seed", range(5))
def test_it_round_trips_and_parses_counts_like_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((37, 53)) > rng.random()
    encoded = rle.encode(mask)
    assert np.array_equal(rle.decode(rle.validate(encoded, height=37, width=53)), mask)
    runs = rle.parse_counts(encoded["counts"])
    uncompressed = coco_mask.frPyObjects({"size": [37, 53], "counts": runs}, 37, 53)
    assert uncompressed["counts"].decode() == encoded["counts"]


def test_it_handles_empty_and_full_masks() -> None:
    for mask in (np.zeros((5, 7), bool), np.ones((5, 7), bool)):
        encoded = rle.encode(mask)
        assert np.array_equal(rle.decode(rle.validate(encoded, height=5, width=7)), mask)


def test_it_reports_area_and_bbox() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:4, 3:8] = True
    assert rle.area_and_bbox(rle.encode(mask)) == (10, [3.0, 2.0, 5.0, 2.0])


@pytest.mark.parametrize(
    "rle_data", [None, [], {"size": [5, 7]}, {"size": [5, 7], "counts": [35]}, {"size": [7, 5], "counts": "0"}]
)
def test_it_refuses_malformed_rle(rle_data: object) -> None:
    with pytest.raises(rle.InvalidRLE):
        rle.validate(rle_data, height=5, width=7)
