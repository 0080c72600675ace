"""The rans embedding coder: lossless on any integer planes it accepts, and it refuses broken streams."""

import dataclasses
from typing import Any

import numpy as np
import pytest

from segmentation.sam import embedding_rans


def round_trip(q: np.ndarray) -> np.ndarray:
    planes, height, width = q.shape
    return embedding_rans.decode_levels(embedding_rans.encode_levels(q), (planes, height, width))


@pytest.mark.parametrize(
    "shape, scale",
    [
        ((3, 16, 32), 1),  # mostly direct tokens
        ((2, 7, 24), 500),  # a width of 8-column lanes, an odd height
        ((1, 5, 5), 40_000),  # 1-column lanes; residuals with more than 16 raw bits
        ((4, 64, 64), 3),
    ],
)
def test_levels_round_trip(shape: tuple[int, int, int], scale: int) -> None:
    rng = np.random.default_rng(scale)
    smooth = np.cumsum(np.cumsum(rng.normal(size=shape), axis=1), axis=2)
    q = np.rint(smooth * scale).astype(np.int64)
    assert np.array_equal(round_trip(q), q)


def test_extreme_and_constant_levels_round_trip() -> None:
    limit = embedding_rans.LEVEL_LIMIT - 1
    q = np.array([[[limit, -limit, limit, 0], [-limit, limit, -limit, limit]]], dtype=np.int64)
    assert np.array_equal(round_trip(q), q)
    zeros = np.zeros((2, 3, 16), dtype=np.int64)
    assert np.array_equal(round_trip(zeros), zeros)
    with pytest.raises(ValueError):
        embedding_rans.encode_levels(q * 2)


def test_tokens_split_and_join_exactly() -> None:
    z = np.concatenate([np.arange(70_000), 2 ** np.arange(4, 30), 2 ** np.arange(4, 30) - 1]).astype(np.int64)
    tokens, raw_bits, raw = embedding_rans.tokenise(z)
    assert tokens.max() < embedding_rans.MAX_TOKENS
    assert np.array_equal(raw_bits, embedding_rans.token_raw_bits(tokens))
    assert (raw < (1 << raw_bits)).all()
    assert np.array_equal(embedding_rans.token_base(tokens) | raw, z)


def test_frequencies_sum_to_the_scale_and_keep_every_seen_token() -> None:
    counts = np.array([[1_000_000, 1, 1, 0, 1], [0, 0, 0, 0, 0], [3, 0, 0, 0, 0], [1] * 5], dtype=np.int64)
    freq = embedding_rans.frequencies(counts).astype(np.int64)
    scale = embedding_rans.PROB_SCALE
    assert freq.sum(axis=1).tolist() == [scale, 0, scale, scale]
    assert np.array_equal(freq > 0, counts > 0)


def test_it_refuses_damaged_streams() -> None:
    rng = np.random.default_rng(0)
    q = np.rint(np.cumsum(rng.normal(size=(2, 8, 16)) * 50, axis=2)).astype(np.int64)
    coded = embedding_rans.encode_levels(q)

    def decode(**changes: Any) -> None:
        embedding_rans.decode_levels(dataclasses.replace(coded, **changes), (2, 8, 16))

    words = coded.words.copy()
    words[len(words) // 2] ^= 0x5555
    broken_table = coded.frequencies.copy()
    broken_table[np.flatnonzero(broken_table.sum(axis=1))[0], 0] += 1
    for bad in [
        {"words": coded.words[:-1]},
        {"words": np.concatenate([coded.words, coded.words[:1]])},
        {"words": words},
        {"frequencies": broken_table},
        {"thresholds": coded.thresholds[::-1].copy()},
        {"lane_width": 3},
    ]:
        with pytest.raises(embedding_rans.CorruptStream):
            decode(**bad)
