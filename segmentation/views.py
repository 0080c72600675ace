"""Pages: thin views that render the shell; the data comes from the API."""

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from . import model_runtime, selectors, services


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "projects.html", {"projects": selectors.projects_for(request.user)})


@login_required
def project_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project, role = selectors.project_for(request.user, project_id)
    return render(request, "project.html", {"project": project, "role": role})


@login_required
def annotator_page(request: HttpRequest, image_id: int) -> HttpResponse:
    image, role = selectors.image_for(request.user, image_id)
    services.image_open(image=image)
    previous_id, next_id = selectors.neighbours(image)
    context = {
        "image": image,
        "project": image.project,
        "role": role,
        "model_key": model_runtime.current_spec().key,
        "graphs_version": model_runtime.interactive_graphs_version(),
        "previous_id": previous_id,
        "next_id": next_id,
    }
    response = render(request, "annotator.html", context)
    # Cross-origin isolation lets onnxruntime-web use wasm threads (SharedArrayBuffer).
    response["Cross-Origin-Opener-Policy"] = "same-origin"
    response["Cross-Origin-Embedder-Policy"] = "require-corp"
    return response


def signup(request: HttpRequest) -> HttpResponse:
    form: UserCreationForm[User] = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker answer."""
    problems = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # any failure here means "unhealthy", whatever its type
        problems["database"] = str(error)
    broker = _broker_problem()
    if broker:
        problems["broker"] = broker
    if problems:
        return JsonResponse({"status": "unhealthy", **problems}, status=503)
    return JsonResponse({"status": "ok"})


def _broker_problem() -> str | None:
    from django.conf import settings

    if not settings.CELERY_BROKER_URL:
        return None
    import redis

    try:
        redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        return str(error)
    return None
