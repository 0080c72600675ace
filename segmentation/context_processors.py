from django.http import HttpRequest

from . import model_runtime


def model_status(request: HttpRequest) -> dict[str, str | None]:
    """The banner shown on every page when the model cannot run."""
    return {"model_problem": model_runtime.model_problem()}
