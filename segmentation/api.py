"""HTTP API v1: thin views — validate, call a service or selector, respond."""

import functools
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Prefetch
from django.http import FileResponse, HttpResponse, HttpResponseBase, StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from . import exports, model_runtime, rle, selectors, services
from .image_files import RejectedImage
from .models import Embedding, Image
from .sam import embedding_codec, interactive
from .sam.onnx_decoder import INTERACTIVE_GRAPHS
from .serializers import (
    ImageSerializer,
    LabelInSerializer,
    LabelSerializer,
    MaskInSerializer,
    MaskPatchSerializer,
    MaskSerializer,
    MemberInSerializer,
    MemberSerializer,
    ProjectInSerializer,
    ProjectSerializer,
    SegmentInSerializer,
)


def _image_context() -> dict[str, Any]:
    return {"model_key": model_runtime.current_spec().key}


def _images_with_embeddings() -> Any:
    return Image.objects.prefetch_related(
        Prefetch("embeddings", queryset=Embedding.objects.only("id", "image_id", "model_key", "digest"))
    )


# --- projects -----------------------------------------------------------------------------------------


@extend_schema(request=ProjectInSerializer, responses=ProjectSerializer(many=True))
@api_view(["GET", "POST"])
def projects(request: Request) -> Response:
    if request.method == "POST":
        data = ProjectInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = services.project_create(user=request.user, name=data.validated_data["name"])
        return Response(ProjectSerializer(project, context={"roles": {project.id: "owner"}}).data, status=201)
    mine = selectors.projects_for(request.user)
    return Response(ProjectSerializer(mine, many=True, context={"roles": selectors.roles_of(request.user)}).data)


@extend_schema(request=ProjectInSerializer, responses=ProjectSerializer)
@api_view(["GET", "PATCH", "DELETE"])
def project_detail(request: Request, project_id: int) -> Response:
    project, role = selectors.project_for(request.user, project_id, write=request.method != "GET")
    if request.method == "DELETE":
        if role != "owner":
            raise selectors.NotAllowed("only the owner can delete a project")
        services.project_delete(project=project)
        return Response(status=204)
    if request.method == "PATCH":
        data = ProjectInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.project_rename(project=project, name=data.validated_data["name"])
    return Response(ProjectSerializer(project, context={"roles": {project.id: role}}).data)


@extend_schema(request=MemberInSerializer, responses=MemberSerializer(many=True))
@api_view(["GET", "POST"])
def project_members(request: Request, project_id: int) -> Response:
    project, role = selectors.project_for(request.user, project_id)
    if request.method == "POST":
        if role != "owner":
            raise selectors.NotAllowed("only the owner can add members")
        data = MemberInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.member_add(project=project, **data.validated_data)
        return Response(MemberSerializer(membership).data, status=201)
    return Response(MemberSerializer(selectors.members_of(project), many=True).data)


@extend_schema(request=LabelInSerializer, responses=LabelSerializer(many=True))
@api_view(["GET", "POST"])
def project_labels(request: Request, project_id: int) -> Response:
    project, _ = selectors.project_for(request.user, project_id, write=request.method == "POST")
    if request.method == "POST":
        data = LabelInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        label = services.label_ensure(project=project, **data.validated_data)
        return Response(LabelSerializer(label).data, status=201)
    return Response(LabelSerializer(project.labels.all(), many=True).data)


# --- images -------------------------------------------------------------------------------------------


@extend_schema(
    request={
        "multipart/form-data": {
            "type": "object",
            "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
        }
    },
    responses=ImageSerializer(many=True),
)
@api_view(["GET", "POST"])
def project_images(request: Request, project_id: int) -> Response:
    project, _ = selectors.project_for(request.user, project_id, write=request.method == "POST")
    if request.method == "POST":
        return _upload(request, project)
    images = _images_with_embeddings().filter(project=project).order_by("id")
    return Response(ImageSerializer(images, many=True, context=_image_context()).data)


def _upload(request: Request, project: Any) -> Response:
    uploads = request.FILES.getlist("file")
    if not uploads:
        return Response({"error": "send one or more files in the multipart field 'file'"}, status=400)
    for upload in uploads:
        if upload.size is not None and upload.size > settings.MAX_UPLOAD_BYTES:
            limit = settings.MAX_UPLOAD_BYTES // (1024 * 1024)
            return Response({"error": f"{upload.name}: the file is larger than {limit} MiB"}, status=413)
    results: list[tuple[Image, bool]] = []
    # All or nothing: one bad file in a batch leaves no new image of that batch behind. Once the block
    # reaches its commit the rows may be committed (the commit failed midway, or an on-commit callback
    # raised): their files stay, and services.orphan_files_delete removes any that no row refers to.
    committing = False
    try:
        with transaction.atomic():
            for upload in uploads:
                try:
                    results.append(
                        services.image_create(
                            project=project, user=request.user, data=upload.read(), filename=upload.name or ""
                        )
                    )
                except RejectedImage as error:
                    raise RejectedImage(f"{upload.name}: {error}", status=error.status) from error
            committing = True
    except BaseException:
        if not committing:
            for image, created in results:
                if created:
                    services.image_files_delete(image)
        raise
    images = [image for image, _ in results]
    return Response(ImageSerializer(images, many=True, context=_image_context()).data, status=201)


@extend_schema(responses={(200, "image/jpeg"): bytes})
@api_view(["GET"])
def image_thumbnail(request: Request, image_id: int) -> FileResponse:
    image, _ = selectors.image_for(request.user, image_id)
    response = FileResponse(image.thumbnail.open("rb"), content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=86400"
    return response


@extend_schema(responses=ImageSerializer)
@api_view(["GET", "DELETE"])
def image_detail(request: Request, image_id: int) -> Response:
    image, _ = selectors.image_for(request.user, image_id, write=request.method == "DELETE")
    if request.method == "DELETE":
        services.image_delete(image=image)
        return Response(status=204)
    image = _images_with_embeddings().get(pk=image.pk)
    return Response(ImageSerializer(image, context=_image_context()).data)


@extend_schema(responses={(200, "image/png"): bytes})
@api_view(["GET"])
def image_file(request: Request, image_id: int) -> FileResponse:
    image, _ = selectors.image_for(request.user, image_id)
    response = FileResponse(image.file.open("rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=86400"
    return response


@extend_schema(responses={(200, embedding_codec.CONTENT_TYPE): bytes})
@api_view(["GET"])
def image_embedding(request: Request, image_id: int) -> HttpResponseBase:
    image, _ = selectors.image_for(request.user, image_id)
    embedding = image.embeddings.filter(model_key=model_runtime.current_spec().key).first()
    if embedding is None:
        return HttpResponse('{"error": "the embedding is not ready yet"}', status=409, content_type="application/json")
    etag = f'"{embedding.digest}"'
    response: HttpResponseBase
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponse(status=304)
    else:
        response = FileResponse(embedding.file.open("rb"), content_type=embedding_codec.CONTENT_TYPE)
    response["ETag"] = etag
    # The URL the app hands out carries the digest (?v=), so the bytes behind it never change.
    content_addressed = request.query_params.get("v") == embedding.digest[:16]
    response["Cache-Control"] = "private, max-age=31536000, immutable" if content_addressed else "private, no-cache"
    return response


@functools.lru_cache(maxsize=8)
def _embedding_tensor(digest: str, name: str) -> np.ndarray:
    """A stored embedding blob, decoded (read-only). Decoding the default blob takes ~120 ms, which an
    API client sending many prompts for one image would pay on every request; keyed by the blob's
    content digest, so an entry is never stale. 8 entries of 4 MiB."""
    with default_storage.open(name, "rb") as handle:
        _, tensor = embedding_codec.decode(handle.read())
    tensor.flags.writeable = False
    return tensor


@extend_schema(request=SegmentInSerializer)
@api_view(["POST"])
def image_segment(request: Request, image_id: int) -> Response:
    image, _ = selectors.image_for(request.user, image_id)
    data = SegmentInSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    embedding = image.embeddings.filter(model_key=model_runtime.current_spec().key).first()
    if embedding is None:
        return Response({"error": "the embedding is not ready yet"}, status=409)
    tensor = _embedding_tensor(embedding.digest, embedding.file.name)
    points = data.validated_data["points"]
    box = data.validated_data["box"]
    if data.validated_data["replay"]:
        # The annotator's click chain (the first click's chosen candidate, then low-res feedback): one mask.
        step = interactive.replay(
            model_runtime.server_decoder(),
            embedding=tensor,
            orig_size=(image.height, image.width),
            points=points,
            box=box,
            candidate=data.validated_data["candidate"],
        )
        return Response({"masks": [{"rle": rle.encode(step.mask), "score": step.score}], "model": embedding.model_key})
    result = model_runtime.server_decoder().predict(
        embedding=tensor,
        orig_size=(image.height, image.width),
        points=np.array([p[:2] for p in points], dtype=np.float32) if points else None,
        labels=np.array([p[2] for p in points], dtype=np.float32) if points else None,
        box=np.array(box, dtype=np.float32) if box is not None else None,
        mask_input=None,
        multimask=data.validated_data["multimask"],
    )
    order = np.argsort(-result.scores)
    masks = [{"rle": rle.encode(result.masks[i]), "score": float(result.scores[i])} for i in order]
    return Response({"masks": masks, "model": embedding.model_key})


# --- masks --------------------------------------------------------------------------------------------


@extend_schema(request=MaskInSerializer, responses=MaskSerializer(many=True))
@api_view(["GET", "POST"])
def image_masks(request: Request, image_id: int) -> Response:
    image, _ = selectors.image_for(request.user, image_id, write=request.method == "POST")
    if request.method == "POST":
        data = MaskInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        mask = services.mask_save(
            image=image,
            user=request.user,
            label=values["label"],
            rle_data=dict(values["rle"]),
            points=values["points"],
            box=values["box"],
            score=values["score"],
            candidate=values["candidate"],
            model_key=model_runtime.current_spec().key,
        )
        return Response(MaskSerializer(mask).data, status=201)
    return Response(MaskSerializer(image.masks.select_related("image"), many=True).data)


@extend_schema(request=MaskPatchSerializer, responses=MaskSerializer)
@api_view(["GET", "PATCH", "DELETE"])
def mask_detail(request: Request, mask_id: int) -> Response:
    mask = selectors.mask_for(request.user, mask_id, write=request.method != "GET")
    if request.method == "DELETE":
        services.mask_delete(mask=mask)
        return Response(status=204)
    if request.method == "PATCH":
        data = MaskPatchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.mask_update(mask=mask, label=data.validated_data["label"])
    return Response(MaskSerializer(mask).data)


@extend_schema(responses={(200, "image/png"): bytes})
@api_view(["GET"])
def mask_png(request: Request, mask_id: int) -> HttpResponse:
    mask = selectors.mask_for(request.user, mask_id)
    png = exports.mask_png(mask)
    response = HttpResponse(png, content_type="image/png")
    response["Content-Disposition"] = f'attachment; filename="{exports.mask_filename(mask)}"'
    return response


# --- export and model files ----------------------------------------------------------------------------


@extend_schema(responses={(200, "application/zip"): bytes, (200, "application/json"): dict})
@api_view(["GET"])
def project_export(request: Request, project_id: int) -> StreamingHttpResponse | Response:
    project, _ = selectors.project_for(request.user, project_id)
    fmt = request.query_params.get("format", "coco")
    if fmt not in exports.FORMATS:
        return Response({"error": f"format must be one of {', '.join(exports.FORMATS)}"}, status=400)
    content_type, filename, chunks = exports.export_project(project, fmt)
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@extend_schema(responses={(200, "application/octet-stream"): bytes})
@api_view(["GET"])
def model_decoder(request: Request, model_key: str) -> HttpResponseBase:
    """The full decoder graph, or with ?graph=prepare|prompt the browser's interactive pair."""
    if model_key != model_runtime.current_spec().key:
        return Response({"error": f"this server runs model {model_runtime.current_spec().key}"}, status=404)
    graph = request.query_params.get("graph", "decoder")
    if graph not in ("decoder", *INTERACTIVE_GRAPHS):
        return Response({"error": f"graph must be one of decoder, {', '.join(INTERACTIVE_GRAPHS)}"}, status=400)
    path = model_runtime.decoder_path(graph)
    etag = f'"{path.stem}"'  # the name carries the checkpoint hash and the export format version
    response: HttpResponseBase
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponse(status=304)
    else:
        response = FileResponse(path.open("rb"), content_type="application/octet-stream")
    response["Cache-Control"] = "private, max-age=3600"
    response["ETag"] = etag
    return response
