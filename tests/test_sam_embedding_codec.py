import numpy as np
import pytest

from segmentation.sam import embedding_codec


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_it_round_trips_with_its_model_key(dtype: str) -> None:
    embedding = np.random.default_rng(0).normal(size=(1, 256, 64, 64)).astype(np.float32)
    blob = embedding_codec.encode(embedding, model_key="mobile_sam", dtype=dtype)
    header, decoded = embedding_codec.decode(blob)
    assert header.model == "mobile_sam"
    assert header.shape == (1, 256, 64, 64)
    assert decoded.dtype == np.float32
    tolerance = 0 if dtype == "float32" else 2e-3
    assert np.abs(decoded - embedding).max() <= tolerance * 4
    # The data starts on a 16-byte boundary so the browser can view it in place.
    assert (len(blob) - decoded.size * np.dtype(dtype).itemsize) % 16 == 0


def test_it_refuses_foreign_bytes() -> None:
    with pytest.raises(embedding_codec.InvalidEmbedding):
        embedding_codec.decode(b"PNG....................")
