"""Every write lives here: typed, keyword-only, one place per state change.

Views validate and call these; tasks fetch by id and call these. Events to teammates are sent on
commit, so nobody is told about a row that was rolled back.
"""

import hashlib
import logging
import re
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from . import events, jobs, rle
from .image_files import RejectedImage, content_hash, load_rgb, prepare_image
from .models import Embedding, Image, ImageStatus, Label, Mask, Membership, Project, Role
from .sam import embedding_codec, interactive
from .selectors import AnyUser, user_id

logger = logging.getLogger(__name__)


class InvalidInput(ValueError):
    """Bad input that the client must fix (400)."""


# --- projects and members -------------------------------------------------------------------------


@transaction.atomic
def project_create(*, user: AnyUser, name: str) -> Project:
    project = Project.objects.create(name=_clean_name(name), created_by_id=user.pk)
    Membership.objects.create(project=project, user_id=user_id(user), role=Role.OWNER)
    return project


def project_rename(*, project: Project, name: str) -> Project:
    project.name = _clean_name(name)
    project.save(update_fields=["name"])
    return project


def project_delete(*, project: Project) -> None:
    files = [name for image in project.images.all() for name in (image.file.name, image.thumbnail.name)]
    files += [e.file.name for e in Embedding.objects.filter(image__project=project)]
    project.delete()
    transaction.on_commit(lambda: _delete_files(files))


def member_add(*, project: Project, username: str, role: str) -> Membership:
    if role not in Role.values:
        raise InvalidInput(f"role must be one of {', '.join(Role.values)}")
    user = User.objects.filter(username=username).first()
    if user is None:
        raise InvalidInput(f"no user named {username!r}")
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


LABEL_PALETTE = (
    "#2563eb",
    "#dc2626",
    "#16a34a",
    "#d97706",
    "#9333ea",
    "#0891b2",
    "#db2777",
    "#65a30d",
    "#4f46e5",
    "#ea580c",
)


def label_ensure(*, project: Project, name: str, color: str | None = None) -> Label:
    """The project's label of that name, created (with the next palette colour) if it is new."""
    name = _clean_label(name)
    if color is not None and not re.fullmatch(r"#[0-9a-fA-F]{6}", color):
        raise InvalidInput("color must look like #rrggbb")
    existing = Label.objects.filter(project=project, name=name).first()
    if existing is not None:
        if color is not None and existing.color != color.lower():
            existing.color = color.lower()
            existing.save(update_fields=["color"])
        return existing
    default = LABEL_PALETTE[Label.objects.filter(project=project).count() % len(LABEL_PALETTE)]
    label, _ = Label.objects.get_or_create(project=project, name=name, defaults={"color": (color or default).lower()})
    return label


def _clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise InvalidInput("name must not be empty")
    if len(name) > 200:
        raise InvalidInput("name must be at most 200 characters")
    return name


# --- images and embeddings --------------------------------------------------------------------------


def image_create(*, project: Project, user: AnyUser, data: bytes, filename: str) -> tuple[Image, bool]:
    """Validate the bytes, store the normalised pixels and a thumbnail under generated names, and queue
    the embedding once the row is committed. Returns (image, created): bytes already in the project
    return the stored image (and its embedding) instead of a copy.

    Raises RejectedImage (with its HTTP status) before anything is written.
    """
    existing = Image.objects.filter(project=project, sha256=content_hash(data)).first()
    if existing is not None:
        return existing, False
    prepared = prepare_image(data, max_bytes=settings.MAX_UPLOAD_BYTES, max_pixels=settings.MAX_IMAGE_PIXELS)
    image = Image(
        project=project,
        original_name=(filename or "image")[:255],
        sha256=prepared.sha256,
        width=prepared.width,
        height=prepared.height,
        uploaded_by_id=user.pk,
    )
    name = uuid.uuid4().hex
    # No file without a row. Until the block below reaches its commit, a failure means the row is not
    # there, so its files go too. After that (the commit itself failed, or an on-commit callback
    # raised) the row may well be committed: its files stay, and `orphan_files_delete` removes them
    # later if no row refers to them. A process killed between the writes and the commit leaves them
    # to that sweep as well.
    committing = False
    try:
        image.file.save(f"{name}.png", ContentFile(prepared.png), save=False)
        image.thumbnail.save(f"{name}.jpg", ContentFile(prepared.thumbnail_jpeg), save=False)
        with transaction.atomic():
            image.save()
            transaction.on_commit(lambda: jobs.enqueue_embedding(image.id))
            committing = True
    except IntegrityError:
        if committing:
            raise
        # The same bytes arrived concurrently and the other upload won: use its image.
        image_files_delete(image)
        return Image.objects.get(project=project, sha256=prepared.sha256), False
    except BaseException:
        if not committing:
            image_files_delete(image)
        raise
    return image, True


def image_files_delete(image: Image) -> None:
    """Delete an image's stored files (not its row). A file that cannot be deleted now is logged and
    left to `orphan_files_delete`."""
    _delete_files([image.file.name, image.thumbnail.name])


def image_delete(*, image: Image) -> None:
    files = [image.file.name, image.thumbnail.name] + [e.file.name for e in image.embeddings.all()]
    project_id, image_id = image.project_id, image.id
    image.delete()
    transaction.on_commit(lambda: _delete_files(files))
    transaction.on_commit(
        lambda: events.send_project_event(
            project_id, "image.status", {"image": image_id, "status": "deleted", "error": ""}
        )
    )


def requeue_stale_images(*, older_than_seconds: int) -> list[int]:
    """Queue again the jobs the broker lost; the database says which images still need one.

    An image `embedding` for longer than the deadline lost its worker. An image `queued` for longer
    than the deadline while the broker holds no job at all lost its message (a flushed or restarted
    broker). Jobs are idempotent, so queueing one twice costs nothing but a no-op.
    """
    deadline = timezone.now() - timedelta(seconds=older_than_seconds)
    stale = Image.objects.filter(updated_at__lt=deadline)
    stuck = stale.filter(status=ImageStatus.EMBEDDING)
    if jobs.broker_backlog() == 0:
        stuck = stuck | stale.filter(status=ImageStatus.QUEUED)
    image_ids = list(stuck.values_list("id", flat=True))
    for image_id in image_ids:
        # Back to `queued` (the claim of a dead worker is void, so the new job may take the image), and
        # touched, so the next sweep waits a full deadline before trying it again.
        Image.objects.filter(pk=image_id).update(status=ImageStatus.QUEUED, updated_at=timezone.now())
        jobs.enqueue_embedding(image_id)
    if image_ids:
        logger.warning("re-queued %d stale embedding jobs: %s", len(image_ids), image_ids)
    return image_ids


def image_open(*, image: Image) -> None:
    """Someone opened this image in the annotator: its embedding goes before the bulk backlog."""
    if image.status in (ImageStatus.QUEUED, ImageStatus.EMBEDDING):
        jobs.enqueue_embedding(image.id, interactive=True)


def embedding_compute(*, image_id: int) -> None:
    """Encode the image (and, on a GPU, a batch of other queued images with it) with the configured
    model and store the embeddings. Idempotent per (image, model): a redelivered job is a no-op."""
    from . import model_runtime

    model_key = model_runtime.current_spec().key
    image = Image.objects.filter(pk=image_id).first()
    if image is None:
        logger.info("image %s was deleted before its embedding ran", image_id)
        return
    if image.embeddings.filter(model_key=model_key).exists():
        _set_status(image, ImageStatus.READY)
        return
    batch = _claim_batch(image_id=image_id, model_key=model_key, size=model_runtime.batch_size())
    if not batch:
        logger.info("image %s is being embedded by another worker's batch", image_id)
        return
    for claimed in batch:
        _announce_status(claimed)
    pixels = []
    for claimed in batch:
        with claimed.file.open("rb") as handle:
            pixels.append(load_rgb(handle.read()))
    for claimed, embedding in zip(batch, model_runtime.encode_images(pixels), strict=True):
        blob = embedding_codec.encode(embedding, model_key=model_key, dtype=settings.EMBEDDING_DTYPE)
        embedding_store(image=claimed, model_key=model_key, blob=blob)


def _claim_batch(*, image_id: int, model_key: str, size: int) -> list[Image]:
    """Mark this image, and up to size-1 other queued images without an embedding, as `embedding`.

    Rows locked by another worker are skipped (SKIP LOCKED), and an image another worker claimed within
    the stale-job deadline is left to it: its own job finds the embedding stored and does nothing, and if
    that worker died the sweep queues it again.
    """
    recent = timezone.now() - timedelta(seconds=settings.STALE_JOB_SECONDS)
    with transaction.atomic():
        lead = (
            Image.objects.select_for_update(skip_locked=True)
            .filter(pk=image_id)
            .exclude(status=ImageStatus.EMBEDDING, updated_at__gte=recent)
            .first()
        )
        if lead is None:
            return []
        others = (
            Image.objects.select_for_update(skip_locked=True)
            .filter(status=ImageStatus.QUEUED)
            .exclude(pk=image_id)
            .exclude(embeddings__model_key=model_key)
            .order_by("id")[: max(size - 1, 0)]
        )
        batch = [lead, *others]
        Image.objects.filter(pk__in=[i.pk for i in batch]).update(
            status=ImageStatus.EMBEDDING, error="", updated_at=timezone.now()
        )
        for claimed in batch:
            claimed.status, claimed.error = ImageStatus.EMBEDDING, ""
    return batch


def embedding_store(*, image: Image, model_key: str, blob: bytes) -> Embedding:
    digest = hashlib.sha256(blob).hexdigest()
    written: str | None = None
    committing = False  # as in image_create: past this point the row may be committed
    try:
        with transaction.atomic():
            # Lock the image row so a redelivered job racing this one cannot store a second embedding.
            locked = Image.objects.select_for_update().get(pk=image.pk)
            existing = locked.embeddings.filter(model_key=model_key).first()
            if existing is not None:
                embedding = existing
            else:
                embedding = Embedding(image=locked, model_key=model_key, digest=digest, size_bytes=len(blob))
                embedding.file.save(f"{digest}.bin", ContentFile(blob), save=False)
                written = embedding.file.name
                embedding.save()
            locked.status = ImageStatus.READY
            locked.error = ""
            locked.save(update_fields=["status", "error", "updated_at"])
            transaction.on_commit(lambda: _announce_status(locked))
            committing = True
    except BaseException:
        if written and not committing:
            _delete_files([written])  # no file without a row
        raise
    return embedding


def embedding_failed(*, image_id: int, reason: str) -> None:
    image = Image.objects.filter(pk=image_id).first()
    if image is not None:
        _set_status(image, ImageStatus.FAILED, error=reason)


def _set_status(image: Image, status: str, *, error: str = "") -> None:
    image.status = status
    image.error = error
    image.save(update_fields=["status", "error", "updated_at"])
    transaction.on_commit(lambda: _announce_status(image))


def _announce_status(image: Image) -> None:
    events.send_project_event(
        image.project_id, "image.status", {"image": image.id, "status": image.status, "error": image.error}
    )


# --- masks ------------------------------------------------------------------------------------------


def mask_save(
    *,
    image: Image,
    user: AnyUser,
    label: str,
    rle_data: object,
    points: list[list[float]],
    box: list[float] | None,
    score: float | None,
    candidate: int = 0,
    model_key: str = "",
) -> Mask:
    """Store a full-resolution mask. Raises InvalidInput when it does not fit the image or its prompts.

    `candidate` is the first click's chosen multimask candidate (0 = best), see sam/interactive.py."""
    try:
        checked = rle.validate(rle_data, height=image.height, width=image.width)
    except rle.InvalidRLE as error:
        raise InvalidInput(str(error)) from error
    _check_prompts(image, points, box)
    try:
        interactive.check_candidate(points, box, candidate)
    except ValueError as error:
        raise InvalidInput(str(error)) from error
    area, bbox = rle.area_and_bbox(checked)
    label_ensure(project=image.project, name=label)
    mask = Mask.objects.create(
        image=image,
        label=_clean_label(label),
        rle_counts=checked["counts"],
        area=area,
        bbox=bbox,
        points=points,
        box=box,
        score=score,
        candidate=candidate,
        model_key=model_key,
        created_by_id=user.pk,
    )
    transaction.on_commit(
        lambda: events.send_project_event(image.project_id, "mask.saved", {"image": image.id, "mask": mask.id})
    )
    return mask


def mask_update(*, mask: Mask, label: str) -> Mask:
    mask.label = label_ensure(project=mask.image.project, name=label).name
    mask.save(update_fields=["label", "updated_at"])
    image_id, project_id, mask_id = mask.image_id, mask.image.project_id, mask.id
    transaction.on_commit(
        lambda: events.send_project_event(project_id, "mask.saved", {"image": image_id, "mask": mask_id})
    )
    return mask


def mask_delete(*, mask: Mask) -> None:
    image_id, project_id, mask_id = mask.image_id, mask.image.project_id, mask.id
    mask.delete()
    transaction.on_commit(
        lambda: events.send_project_event(project_id, "mask.deleted", {"image": image_id, "mask": mask_id})
    )


def _clean_label(label: Any) -> str:
    if not isinstance(label, str) or not label.strip():
        raise InvalidInput("label must be a non-empty string")
    if len(label) > 100:
        raise InvalidInput("label must be at most 100 characters")
    return label.strip()


def _check_prompts(image: Image, points: list[list[float]], box: list[float] | None) -> None:
    for point in points:
        x, y, _ = point
        if not (0 <= x <= image.width and 0 <= y <= image.height):
            raise InvalidInput(f"point {point} lies outside the {image.width}x{image.height} image")
    if box is not None:
        x0, y0, x1, y1 = box
        if not (x0 < x1 and y0 < y1):
            raise InvalidInput("box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1")


def _delete_files(names: Sequence[str | None]) -> None:
    from django.core.files.storage import default_storage

    for name in filter(None, names):
        try:
            default_storage.delete(name)
        except Exception:  # OSError locally, botocore's errors on S3: never hide the caller's own error
            logger.warning("could not delete %s; orphan_files_delete will", name, exc_info=True)


# --- stored files without a row -------------------------------------------------------------------

# Every file the app stores, by the field that refers to it. Each upload_to is one flat folder.
STORED_FILE_FIELDS: tuple[tuple[type[models.Model], str], ...] = (
    (Image, "file"),
    (Image, "thumbnail"),
    (Embedding, "file"),
)


def orphan_files_delete(*, older_than_seconds: int, dry_run: bool = False) -> list[str]:
    """Delete the stored files that no row refers to and that were last modified more than
    `older_than_seconds` ago; returns their names (with `dry_run`, only says which).

    Files are written before their row is committed, so a process killed in between (SIGKILL, OOM),
    a commit that failed after the writes, or a delete whose on-commit file removal never ran leaves
    files nobody refers to. The grace period keeps the files of an upload or job still in flight,
    whose row is not committed yet: it must be longer than the longest request or job.

    Cheap on large stores: per folder, one listing (`Storage.listdir`, so local disk and S3 alike)
    and one streamed scan of the names the rows hold; the modification time is asked only of the
    few files no row refers to.
    """
    from django.core.files.storage import default_storage

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    deleted: list[str] = []
    fields_by_folder: dict[str, list[tuple[type[models.Model], str]]] = {}
    for model, field in STORED_FILE_FIELDS:
        fields_by_folder.setdefault(_upload_folder(model, field), []).append((model, field))
    for folder, fields in sorted(fields_by_folder.items()):
        try:
            _, listed = default_storage.listdir(folder)
        except FileNotFoundError:  # a local store that never held such a file
            continue
        unreferenced = {f"{folder}/{name}" for name in listed}
        if not unreferenced:
            continue
        for model, field in fields:
            names = model._default_manager.filter(**{f"{field}__startswith": f"{folder}/"}).values_list(
                field, flat=True
            )
            unreferenced.difference_update(names.iterator(chunk_size=10_000))
        for name in sorted(unreferenced):
            try:
                modified = default_storage.get_modified_time(name)
            except Exception:  # deleted meanwhile (a row's own delete), or the store blinked: next sweep
                logger.info("orphan sweep: could not read the time of %s; skipped", name, exc_info=True)
                continue
            if modified >= cutoff:
                continue  # perhaps an upload in flight: its row may still come
            if not dry_run:
                try:
                    default_storage.delete(name)
                except Exception:
                    logger.warning("orphan sweep: could not delete %s", name, exc_info=True)
                    continue
            deleted.append(name)
    if deleted:
        logger.warning(
            "%s %d orphaned files (no row, older than %ss): %s",
            "would delete" if dry_run else "deleted",
            len(deleted),
            older_than_seconds,
            " ".join(deleted),
        )
    return deleted


def _upload_folder(model: type[models.Model], field: str) -> str:
    file_field = model._meta.get_field(field)
    assert isinstance(file_field, models.FileField)
    upload_to = file_field.upload_to
    assert isinstance(upload_to, str) and "%" not in upload_to, "the sweep lists one flat folder per field"
    return upload_to.strip("/")


__all__ = ["InvalidInput", "RejectedImage"]
