"""Request validation and response shapes for the API."""

from typing import Any

from rest_framework import serializers

from .models import Image, Label, Mask, Membership, Project
from .sam import interactive


class ProjectSerializer(serializers.ModelSerializer[Project]):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["id", "name", "created_at", "role"]
        read_only_fields = ["id", "created_at", "role"]

    def get_role(self, project: Project) -> str | None:
        return self.context.get("roles", {}).get(project.id)


class ProjectInSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200)


class MemberSerializer(serializers.ModelSerializer[Membership]):
    username = serializers.CharField(source="user.username")

    class Meta:
        model = Membership
        fields = ["username", "role"]


class MemberInSerializer(serializers.Serializer[Any]):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=["owner", "editor", "viewer"])


class LabelSerializer(serializers.ModelSerializer[Label]):
    class Meta:
        model = Label
        fields = ["id", "name", "color"]


class LabelInSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    color = serializers.RegexField(r"^#[0-9a-fA-F]{6}$", required=False, allow_null=True, default=None)


class ImageSerializer(serializers.ModelSerializer[Image]):
    name = serializers.CharField(source="original_name")
    model = serializers.SerializerMethodField()
    file_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    embedding_url = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "id",
            "project",
            "name",
            "width",
            "height",
            "status",
            "error",
            "model",
            "file_url",
            "thumbnail_url",
            "embedding_url",
            "created_at",
        ]

    def _embedding(self, image: Image) -> Any:
        # Prefetched as `ready_embeddings` by the views; one embedding per (image, model).
        model_key = self.context["model_key"]
        return next((e for e in image.embeddings.all() if e.model_key == model_key), None)

    def get_model(self, image: Image) -> str:
        return str(self.context["model_key"])

    def get_file_url(self, image: Image) -> str:
        return f"/api/v1/images/{image.id}/file"

    def get_thumbnail_url(self, image: Image) -> str:
        return f"/api/v1/images/{image.id}/thumbnail"

    def get_embedding_url(self, image: Image) -> str | None:
        embedding = self._embedding(image)
        return None if embedding is None else f"/api/v1/images/{image.id}/embedding?v={embedding.digest[:16]}"


class PointField(serializers.ListField):
    child = serializers.FloatField()

    def to_internal_value(self, data: Any) -> list[float]:
        value = super().to_internal_value(data)
        if len(value) != 3 or value[2] not in (0.0, 1.0):
            raise serializers.ValidationError("a point is [x, y, label] with label 1 (positive) or 0 (negative)")
        return value


class BoxField(serializers.ListField):
    child = serializers.FloatField()

    def to_internal_value(self, data: Any) -> list[float]:
        value = super().to_internal_value(data)
        if len(value) != 4:
            raise serializers.ValidationError("box is [x0, y0, x1, y1]")
        return value


class CandidateField(serializers.IntegerField):
    """The first click's chosen multimask candidate, 0 (the best) to 2."""

    def __init__(self) -> None:
        super().__init__(
            required=False,
            default=0,
            min_value=0,
            max_value=interactive.CANDIDATES - 1,
            error_messages={"min_value": "must be 0 (the best), 1 or 2", "max_value": "must be 0 (the best), 1 or 2"},
        )


class SegmentInSerializer(serializers.Serializer[Any]):
    points = serializers.ListField(child=PointField(), required=False, default=list, max_length=64)
    box = BoxField(required=False, allow_null=True, default=None)
    multimask = serializers.BooleanField(required=False, default=False)
    # Replay the points in order as the annotator builds an object (see segmentation/sam/interactive.py),
    # starting from the first click's chosen candidate.
    replay = serializers.BooleanField(required=False, default=False)
    candidate = CandidateField()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs["points"] and attrs["box"] is None:
            raise serializers.ValidationError("give at least one point or a box")
        if attrs["candidate"] and not attrs["replay"]:
            raise serializers.ValidationError({"candidate": "only applies with replay: true"})
        try:
            interactive.check_candidate(attrs["points"], attrs["box"], attrs["candidate"])
        except ValueError as error:
            raise serializers.ValidationError({"candidate": str(error)}) from error
        return attrs


class RLESerializer(serializers.Serializer[Any]):
    size = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=2, max_length=2)
    counts = serializers.CharField(trim_whitespace=False, max_length=50_000_000)


class MaskInSerializer(serializers.Serializer[Any]):
    label = serializers.CharField(max_length=100)  # type: ignore[assignment]  # DRF stubs: Field.label
    rle = RLESerializer()
    points = serializers.ListField(child=PointField(), required=False, default=list, max_length=256)
    box = BoxField(required=False, allow_null=True, default=None)
    score = serializers.FloatField(required=False, allow_null=True, default=None)
    candidate = CandidateField()


class MaskPatchSerializer(serializers.Serializer[Any]):
    label = serializers.CharField(max_length=100)  # type: ignore[assignment]  # DRF stubs: Field.label


class MaskSerializer(serializers.ModelSerializer[Mask]):
    rle = serializers.SerializerMethodField()

    class Meta:
        model = Mask
        fields = [
            "id",
            "image",
            "label",
            "rle",
            "area",
            "bbox",
            "points",
            "box",
            "score",
            "candidate",
            "model_key",
            "created_at",
            "updated_at",
        ]

    def get_rle(self, mask: Mask) -> dict[str, Any]:
        return {"size": [mask.image.height, mask.image.width], "counts": mask.rle_counts}
