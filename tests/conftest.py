"""Shared fixtures: named users, API clients, and small images made on the fly."""

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User
from PIL import Image as PILImage
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from segmentation import services
from segmentation.models import Project

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def bob(db: None) -> User:
    """An outsider: a member of no project of alice's."""
    return User.objects.create_user("bob", password="bob-password-1")


@pytest.fixture
def vera(db: None) -> User:
    """A viewer on alice's project."""
    return User.objects.create_user("vera", password="vera-password-1")


@pytest.fixture
def project(alice: User, vera: User) -> Project:
    project = services.project_create(user=alice, name="Cats")
    services.member_add(project=project, username="vera", role="viewer")
    return project


def client_for(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def as_alice(alice: User) -> APIClient:
    return client_for(alice)


@pytest.fixture
def as_bob(bob: User) -> APIClient:
    return client_for(bob)


@pytest.fixture
def as_vera(vera: User) -> APIClient:
    return client_for(vera)


def body(response: Any) -> bytes:
    """The whole body of a test-client response, streamed or not."""
    return b"".join(response.streaming_content) if response.streaming else bytes(response.content)


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48), mode: str = "RGB", **save_args: object) -> bytes:
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "CMYK": 3}[mode]
    pixels = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    image = PILImage.fromarray(pixels[..., 0] if channels == 1 else pixels)
    if mode == "CMYK":
        image = image.convert("CMYK")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


@pytest.fixture
def make_image_bytes() -> Callable[..., bytes]:
    return image_bytes


@pytest.fixture(autouse=True)
def media_in_tmp(settings: object, tmp_path: Path) -> None:
    """Each test stores its files in its own folder; checkpoints and decoders stay shared (they are big)."""
    settings.MEDIA_ROOT = tmp_path / "media"  # type: ignore[attr-defined]
