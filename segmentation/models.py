"""Projects, their members, images, embeddings and masks.

Every object hangs off a Project, and every read goes through `selectors.py`, which scopes it to the
projects the user is a member of.
"""

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"


class Project(models.Model):
    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class Label(models.Model):
    """A project's label set: the names masks are labelled with, and the colour they are drawn in."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(max_length=100)
    color = models.CharField(max_length=7)  # "#rrggbb"

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="unique_label_name")]

    def __str__(self) -> str:
        return self.name


class ImageStatus(models.TextChoices):
    QUEUED = "queued"
    EMBEDDING = "embedding"
    READY = "ready"
    FAILED = "failed"


class Image(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to="images/")
    thumbnail = models.FileField(upload_to="thumbnails/", blank=True)
    original_name = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=ImageStatus.choices, default=ImageStatus.QUEUED)
    error = models.TextField(blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["project", "sha256"], name="one_copy_per_project")]

    def __str__(self) -> str:
        return self.original_name


class Embedding(models.Model):
    """One image's encoder output for one model, stored as an `embedding_codec` blob."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="embeddings")
    model_key = models.CharField(max_length=100)
    file = models.FileField(upload_to="embeddings/")
    # sha256 of the blob: the browser's cache key (content-addressed URL, ETag).
    digest = models.CharField(max_length=64)
    size_bytes = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "model_key"], name="one_embedding_per_model")]

    def __str__(self) -> str:
        return f"{self.model_key} embedding of image {self.image_id}"


class Mask(models.Model):
    """A saved object: its full-resolution mask as COCO compressed RLE and the prompts that made it."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="masks")
    label = models.CharField(max_length=100)
    rle_counts = models.TextField()
    area = models.PositiveIntegerField()
    bbox = models.JSONField()  # [x, y, w, h] in pixels, as COCO has it
    points = models.JSONField(default=list)  # [[x, y, label], ...] in original-image pixels
    box = models.JSONField(null=True, blank=True)  # [x0, y0, x1, y1] or null
    score = models.FloatField(null=True, blank=True)
    # Which multimask candidate of the first click the user kept (0 = best): further clicks refine it,
    # so replaying the prompts needs it (segmentation/sam/interactive.py).
    candidate = models.PositiveSmallIntegerField(default=0)
    model_key = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.label} on image {self.image_id}"
