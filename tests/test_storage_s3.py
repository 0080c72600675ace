"""Images, thumbnails and embeddings through S3-compatible object storage (a real local S3 server)."""

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from segmentation import services
from segmentation.models import Image, Project
from segmentation.sam import embedding_codec
from tests.conftest import FIXTURES, body
from tests.processes import free_port

BUCKET = "sam-test"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait()


@pytest.fixture
def s3(s3_server: str, settings: object) -> object:
    client = boto3.client(
        "s3", endpoint_url=s3_server, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {  # type: ignore[attr-defined]
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_server,
                "access_key": "test",
                "secret_key": "test",
                "region_name": "us-east-1",
                "default_acl": None,
                "file_overwrite": False,
            },
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])


def keys(client: object) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))  # type: ignore[attr-defined]


def test_uploads_and_embeddings_live_in_object_storage(
    s3: object, as_alice: APIClient, alice: User, project: Project, django_capture_on_commit_callbacks: Any
) -> None:
    upload = SimpleUploadedFile("coffee.png", (FIXTURES / "mobile_sam" / "coffee.png").read_bytes())
    response = as_alice.post(f"/api/v1/projects/{project.id}/images/", {"file": [upload]}, format="multipart")
    assert response.status_code == 201
    image = Image.objects.get()
    assert [key.split("/")[0] for key in keys(s3)] == ["images", "thumbnails"]

    services.embedding_compute(image_id=image.id)
    assert [key.split("/")[0] for key in keys(s3)] == ["embeddings", "images", "thumbnails"]

    detail = as_alice.get(f"/api/v1/images/{image.id}/").json()
    assert detail["status"] == "ready"
    header, _ = embedding_codec.decode(body(as_alice.get(detail["embedding_url"])))
    assert header.model == "mobile_sam"
    assert body(as_alice.get(detail["file_url"]))[:8] == b"\x89PNG\r\n\x1a\n"

    with django_capture_on_commit_callbacks(execute=True):
        services.image_delete(image=image)
    assert keys(s3) == []
