import io

from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.processes import free_port


def test_healthz_is_ok_when_database_and_broker_answer(db: None) -> None:
    response = APIClient().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_says_which_part_is_down(db: None, settings: object) -> None:
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"  # type: ignore[attr-defined]
    response = APIClient().get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert "broker" in response.json()


def test_create_token_prints_a_working_token(alice: User) -> None:
    out = io.StringIO()
    call_command("create_token", "alice", stdout=out)
    token = out.getvalue().split()[-1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/projects/").status_code == 200
    again = io.StringIO()
    call_command("create_token", "alice", stdout=again)
    assert again.getvalue().split()[-1] == token


def test_pages_say_when_the_model_checkpoint_is_missing(alice: User, settings: object, tmp_path: object) -> None:
    from django.test import Client

    client = Client()
    client.force_login(alice)
    assert b'id="model-problem"' not in client.get("/").content
    settings.CHECKPOINT_DIR = tmp_path  # type: ignore[attr-defined]
    page = client.get("/").content.decode()
    assert 'id="model-problem"' in page
    assert "mobile_sam.pt" in page
    assert "prepare_model" in page
