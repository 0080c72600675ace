"""A GPU job encodes a batch of queued images at once; every other job for them becomes a no-op."""

from collections.abc import Callable

import numpy as np
import pytest
from django.contrib.auth.models import User

from segmentation import model_runtime, services
from segmentation.models import Embedding, Image, Project


@pytest.fixture
def queued(alice: User, project: Project, make_image_bytes: Callable[..., bytes]) -> list[Image]:
    return [
        services.image_create(
            project=project, user=alice, data=make_image_bytes("PNG", size=(30 + i, 20)), filename=f"{i}.png"
        )[0]
        for i in range(4)
    ]


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batch size 3 (as on a GPU) and a stand-in encoder that records each batch's size."""
    sizes: list[int] = []

    def encode_images(images: list[np.ndarray]) -> list[np.ndarray]:
        sizes.append(len(images))
        return [np.full((1, 256, 64, 64), image.shape[1], dtype=np.float32) for image in images]

    monkeypatch.setattr(model_runtime, "batch_size", lambda: 3)
    monkeypatch.setattr(model_runtime, "encode_images", encode_images)
    return sizes


def test_one_job_encodes_a_batch_of_queued_images(queued: list[Image], encoded: list[int]) -> None:
    services.embedding_compute(image_id=queued[0].id)
    assert encoded == [3]
    assert sorted(Embedding.objects.values_list("image_id", flat=True)) == [i.id for i in queued[:3]]
    assert list(Image.objects.order_by("id").values_list("status", flat=True)) == ["ready", "ready", "ready", "queued"]
    # Each stored embedding belongs to its own image (the stand-in encodes the width; the default
    # codec is lossy within a fraction of its widths' spacing).
    from segmentation.sam import embedding_codec

    for image in queued[:3]:
        with image.embeddings.get().file.open("rb") as handle:
            assert embedding_codec.decode(handle.read())[1].flat[0] == pytest.approx(image.width, abs=0.01)

    services.embedding_compute(image_id=queued[1].id)  # its own job arrives later: nothing to do
    services.embedding_compute(image_id=queued[3].id)
    assert encoded == [3, 1]
    assert Embedding.objects.count() == 4


def test_an_image_another_worker_just_claimed_is_left_to_it(queued: list[Image], encoded: list[int]) -> None:
    Image.objects.filter(pk=queued[0].pk).update(status="embedding")
    services.embedding_compute(image_id=queued[0].id)
    assert encoded == []
    assert not Embedding.objects.exists()
