"""No file without a row: a failed commit deletes what it wrote, and the periodic sweep deletes what a
killed process left behind, on local disk and on S3, never touching a referenced or a young file."""

import io
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.management import call_command
from django.utils import timezone
from redis import Redis

from segmentation import jobs, services, tasks
from segmentation.models import Embedding, Image, Project
from tests import test_storage_s3
from tests.conftest import FIXTURES
from tests.processes import BIN, REPO, celery_worker, database_url

# The real S3 server (moto) and bucket of test_storage_s3.
s3_server = test_storage_s3.s3_server
s3 = test_storage_s3.s3

GRACE = 3600
PHOTO = FIXTURES / "mobile_sam" / "coffee.png"


def stored(root: Path | None = None) -> set[str]:
    """Every stored file's name, relative to MEDIA_ROOT."""
    root = Path(settings.MEDIA_ROOT) if root is None else root
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def age(*names: str, seconds: float) -> None:
    """Make local files look `seconds` old."""
    when = time.time() - seconds
    for name in names:
        os.utime(Path(settings.MEDIA_ROOT) / name, (when, when))


def image_with_embedding(project: Project, user: User, data: bytes) -> tuple[Image, Embedding]:
    image, _ = services.image_create(project=project, user=user, data=data, filename="photo.png")
    embedding = services.embedding_store(image=image, model_key="mobile_sam", blob=os.urandom(64))
    return image, embedding


def referenced(image: Image, embedding: Embedding) -> set[str]:
    return {image.file.name, image.thumbnail.name, embedding.file.name}


def strays(prefix: str) -> set[str]:
    """A file without a row in each folder the app writes to."""
    return {
        default_storage.save(f"images/{prefix}.png", ContentFile(b"png")),
        default_storage.save(f"thumbnails/{prefix}.jpg", ContentFile(b"jpg")),
        default_storage.save(f"embeddings/{prefix}.bin", ContentFile(b"bin")),
    }


# --- the sweep, local disk ------------------------------------------------------------------------


def test_the_sweep_deletes_old_orphans_only(
    alice: User, project: Project, make_image_bytes: Callable[..., bytes], caplog: pytest.LogCaptureFixture
) -> None:
    image, embedding = image_with_embedding(project, alice, make_image_bytes("PNG"))
    kept = referenced(image, embedding)
    old = strays("old")
    age(*kept, *old, seconds=GRACE + 60)
    fresh = strays("fresh")  # perhaps an upload in flight: its row may still come
    default_storage.save("exports/other.txt", ContentFile(b"not ours"))  # a folder the sweep does not own
    age("exports/other.txt", seconds=GRACE + 60)
    assert old | fresh | kept <= stored()

    assert sorted(services.orphan_files_delete(older_than_seconds=GRACE, dry_run=True)) == sorted(old)
    assert old <= stored()  # a dry run deletes nothing

    with caplog.at_level("WARNING", logger="segmentation.services"):
        deleted = services.orphan_files_delete(older_than_seconds=GRACE)
    assert sorted(deleted) == sorted(old)
    assert stored() == kept | fresh | {"exports/other.txt"}
    assert all(name in caplog.text for name in old)  # the log says what went

    assert services.orphan_files_delete(older_than_seconds=GRACE) == []  # nothing left to do
    age(*fresh, seconds=GRACE + 60)
    assert sorted(services.orphan_files_delete(older_than_seconds=GRACE)) == sorted(fresh)
    assert stored() == kept | {"exports/other.txt"}
    assert Image.objects.get().file.read()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_sweep_on_an_empty_store(db: None) -> None:
    assert not Path(settings.MEDIA_ROOT).exists()
    assert services.orphan_files_delete(older_than_seconds=0) == []


def test_the_sweep_deletes_the_files_of_rows_deleted_without_their_files(
    alice: User, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    """A delete whose on-commit file removal never ran (the process died right after the commit)."""
    image, embedding = image_with_embedding(project, alice, make_image_bytes("PNG"))
    names = referenced(image, embedding)
    Image.objects.filter(pk=image.pk).delete()  # the rows go; their files stay
    age(*names, seconds=GRACE + 1)
    assert sorted(services.orphan_files_delete(older_than_seconds=GRACE)) == sorted(names)
    assert stored() == set()


def test_the_management_command(alice: User, project: Project, make_image_bytes: Callable[..., bytes]) -> None:
    image, embedding = image_with_embedding(project, alice, make_image_bytes("PNG"))
    old = strays("old")
    age(*old, *referenced(image, embedding), seconds=GRACE + 60)

    out = io.StringIO()
    call_command("delete_orphan_files", "--older-than", str(GRACE), "--dry-run", stdout=out)
    assert set(out.getvalue().split("\n")[:3]) == old
    assert "would delete 3 orphaned files" in out.getvalue()
    assert old <= stored()

    out = io.StringIO()
    call_command("delete_orphan_files", stdout=out)  # the default grace (a day) keeps them
    assert "deleted 0 orphaned files older than 86400 s" in out.getvalue()

    out = io.StringIO()
    call_command("delete_orphan_files", "--older-than", str(GRACE), stdout=out)
    assert "deleted 3 orphaned files" in out.getvalue()
    assert stored() == referenced(image, embedding)


def test_the_periodic_task_uses_the_grace_setting(
    alice: User, project: Project, settings: Any, make_image_bytes: Callable[..., bytes]
) -> None:
    assert settings.CELERY_BEAT_SCHEDULE["delete-orphan-files"]["task"] == tasks.delete_orphan_files.name
    old = strays("old")
    age(*old, seconds=120)
    settings.ORPHAN_GRACE_SECONDS = 300
    assert tasks.delete_orphan_files() == 0
    settings.ORPHAN_GRACE_SECONDS = 60
    assert tasks.delete_orphan_files() == 3
    assert stored() == set()


# --- a failed commit leaves nothing behind --------------------------------------------------------


def test_a_failed_image_row_commit_deletes_the_files_it_wrote(
    alice: User, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    with (
        mock.patch.object(Image, "save", side_effect=RuntimeError("the database went away")),
        pytest.raises(RuntimeError, match="went away"),
    ):
        services.image_create(project=project, user=alice, data=make_image_bytes("PNG"), filename="a.png")
    assert stored() == set()
    assert not Image.objects.exists()


def test_a_failed_thumbnail_write_deletes_the_image_file(
    alice: User, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    real_save = FileSystemStorage.save
    calls: list[str] = []

    def save_then_fail(storage: FileSystemStorage, name: str, *args: Any, **kwargs: Any) -> str:
        calls.append(name)
        if name.startswith("thumbnails/"):
            raise OSError("disk full")
        return real_save(storage, name, *args, **kwargs)

    with (
        mock.patch.object(FileSystemStorage, "save", autospec=True, side_effect=save_then_fail),
        pytest.raises(OSError, match="disk full"),
    ):
        services.image_create(project=project, user=alice, data=make_image_bytes("PNG"), filename="a.png")
    assert [name.split("/")[0] for name in calls] == ["images", "thumbnails"]
    assert stored() == set()


def test_a_failed_embedding_row_commit_deletes_the_blob(
    alice: User, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    image, _ = services.image_create(project=project, user=alice, data=make_image_bytes("PNG"), filename="a.png")
    before = stored()
    with (
        mock.patch.object(Embedding, "save", side_effect=RuntimeError("the database went away")),
        pytest.raises(RuntimeError, match="went away"),
    ):
        services.embedding_store(image=image, model_key="mobile_sam", blob=b"blob")
    assert stored() == before
    assert not Embedding.objects.exists()


def test_a_failure_after_the_commit_keeps_the_files_of_the_committed_row(
    transactional_db: None, alice: User, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    """An on-commit callback that raises comes out of the block after the row is committed: deleting
    the files then would leave a row without its files."""
    with (
        mock.patch.object(jobs, "enqueue_embedding", side_effect=RuntimeError("after the commit")),
        pytest.raises(RuntimeError, match="after the commit"),
    ):
        services.image_create(project=project, user=alice, data=make_image_bytes("PNG"), filename="a.png")
    image = Image.objects.get()
    assert stored() == {image.file.name, image.thumbnail.name}


KILLED_BETWEEN_FILE_AND_ROW = """
import os, signal, sys
import django
django.setup()
from django.contrib.auth.models import User
from segmentation import services
from segmentation.models import Image, Project

# The files are written; the process dies (SIGKILL: no except, no finally) before the row is saved.
Image.save = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
services.image_create(
    project=Project.objects.get(pk=int(sys.argv[1])),
    user=User.objects.get(pk=int(sys.argv[2])),
    data=open(sys.argv[3], "rb").read(),
    filename="photo.png",
)
"""


def test_a_process_killed_between_the_file_and_the_row_leaves_files_the_sweep_deletes(
    transactional_db: None, alice: User, project: Project, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "DATA_DIR": str(tmp_path),
    }
    killed = subprocess.run(
        [str(BIN / "python"), "-c", KILLED_BETWEEN_FILE_AND_ROW, str(project.pk), str(alice.pk), str(PHOTO)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = stored()
    assert sorted(name.split("/")[0] for name in left) == ["images", "thumbnails"]
    assert not Image.objects.exists()

    assert services.orphan_files_delete(older_than_seconds=GRACE) == []  # young: perhaps in flight
    age(*left, seconds=GRACE + 1)
    assert sorted(services.orphan_files_delete(older_than_seconds=GRACE)) == sorted(left)
    assert stored() == set()


def test_celery_beat_runs_the_sweep(transactional_db: None, alice: User, project: Project, tmp_path: Path) -> None:
    Redis.from_url(settings.REDIS_URL).delete(*settings.GPU_QUEUE_KEYS)
    with mock.patch.object(jobs, "enqueue_embedding"):  # no embedding job wanted here
        image, _ = services.image_create(project=project, user=alice, data=PHOTO.read_bytes(), filename="c.png")
    old = strays("old")
    age(*old, image.file.name, image.thumbnail.name, seconds=600)
    env = {
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "REDIS_URL": settings.REDIS_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "DATA_DIR": str(tmp_path),
        "CHECKPOINT_DIR": str(settings.CHECKPOINT_DIR),
        "ORPHAN_SWEEP_SECONDS": "1",
        "ORPHAN_GRACE_SECONDS": "300",
    }
    with celery_worker(env, tmp_path / "worker.log", name="orphans", beat=True):
        deadline = time.monotonic() + 60
        while stored() & old:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.3)
    assert stored() == {image.file.name, image.thumbnail.name}
    assert "deleted 3 orphaned files" in (tmp_path / "worker.log").read_text()


# --- the sweep, S3 --------------------------------------------------------------------------------


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[float], None]]:
    """Move the sweep's clock forward (an object's LastModified cannot be set on S3)."""
    real_now = timezone.now

    def move(seconds: float) -> None:
        monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=seconds))

    yield move


def test_the_sweep_on_s3(
    s3: object,
    alice: User,
    project: Project,
    make_image_bytes: Callable[..., bytes],
    later: Callable[[float], None],
) -> None:
    image, embedding = image_with_embedding(project, alice, make_image_bytes("PNG"))
    kept = referenced(image, embedding)
    old = strays("old")
    assert set(test_storage_s3.keys(s3)) == kept | old

    assert services.orphan_files_delete(older_than_seconds=GRACE) == []  # all young
    later(GRACE + 60)
    assert sorted(services.orphan_files_delete(older_than_seconds=GRACE, dry_run=True)) == sorted(old)
    assert set(test_storage_s3.keys(s3)) == kept | old
    assert sorted(services.orphan_files_delete(older_than_seconds=GRACE)) == sorted(old)
    assert set(test_storage_s3.keys(s3)) == kept

    # On S3 too, a failed commit deletes the files it wrote, and a young orphan is kept.
    later(0)
    with mock.patch.object(Image, "save", side_effect=KeyboardInterrupt), pytest.raises(KeyboardInterrupt):
        services.image_create(project=project, user=alice, data=make_image_bytes("PNG", size=(80, 60)), filename="b")
    assert set(test_storage_s3.keys(s3)) == kept
    fresh = strays("fresh")
    assert services.orphan_files_delete(older_than_seconds=GRACE) == []
    later(GRACE + 60)
    assert sorted(services.orphan_files_delete(older_than_seconds=GRACE)) == sorted(fresh)
    assert set(test_storage_s3.keys(s3)) == kept


def test_a_failure_after_an_upload_request_commits_keeps_the_files(
    transactional_db: None, alice: User, project: Project, make_image_bytes: Callable[..., bytes]
) -> None:
    """The same through the upload API, whose batch is one transaction."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.conftest import client_for

    files = [SimpleUploadedFile(f"{i}.png", make_image_bytes("PNG", size=(40 + i, 30))) for i in range(2)]
    with (
        mock.patch.object(jobs, "enqueue_embedding", side_effect=RuntimeError("after the commit")),
        pytest.raises(RuntimeError, match="after the commit"),
    ):
        client_for(alice).post(f"/api/v1/projects/{project.id}/images/", {"file": files}, format="multipart")
    assert Image.objects.count() == 2
    assert stored() == {name for image in Image.objects.all() for name in (image.file.name, image.thumbnail.name)}
