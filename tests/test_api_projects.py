from django.contrib.auth.models import User
from rest_framework.test import APIClient

from segmentation.models import Membership, Project


def test_it_requires_authentication(db: None) -> None:
    response = APIClient().get("/api/v1/projects/")
    assert response.status_code in (401, 403)
    assert "error" in response.json()


def test_it_creates_a_project_owned_by_its_creator(as_alice: APIClient, alice: User) -> None:
    response = as_alice.post("/api/v1/projects/", {"name": "  Birds "}, format="json")
    assert response.status_code == 201
    assert response.json()["name"] == "Birds"
    assert response.json()["role"] == "owner"
    assert Membership.objects.get(project_id=response.json()["id"], user=alice).role == "owner"


def test_it_rejects_an_empty_name(as_alice: APIClient) -> None:
    response = as_alice.post("/api/v1/projects/", {"name": "   "}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()["error"]
    assert Project.objects.count() == 0


def test_it_lists_only_my_projects(as_alice: APIClient, as_bob: APIClient, project: Project) -> None:
    assert [p["name"] for p in as_alice.get("/api/v1/projects/").json()] == ["Cats"]
    assert as_bob.get("/api/v1/projects/").json() == []


def test_an_outsider_gets_404(as_bob: APIClient, project: Project) -> None:
    for method, path in [
        ("get", f"/api/v1/projects/{project.id}/"),
        ("patch", f"/api/v1/projects/{project.id}/"),
        ("delete", f"/api/v1/projects/{project.id}/"),
        ("get", f"/api/v1/projects/{project.id}/members/"),
        ("get", f"/api/v1/projects/{project.id}/images/"),
        ("get", f"/api/v1/projects/{project.id}/export?format=coco"),
    ]:
        response = getattr(as_bob, method)(path, {"name": "x"}, format="json")
        assert response.status_code == 404, (method, path)
    assert Project.objects.get().name == "Cats"


def test_a_viewer_reads_but_cannot_write(as_vera: APIClient, project: Project) -> None:
    assert as_vera.get(f"/api/v1/projects/{project.id}/").status_code == 200
    response = as_vera.patch(f"/api/v1/projects/{project.id}/", {"name": "Dogs"}, format="json")
    assert response.status_code == 403
    assert "viewer" in response.json()["error"]
    assert as_vera.delete(f"/api/v1/projects/{project.id}/").status_code == 403
    assert Project.objects.get().name == "Cats"


def test_the_owner_renames_and_deletes(as_alice: APIClient, project: Project) -> None:
    assert as_alice.patch(f"/api/v1/projects/{project.id}/", {"name": "Dogs"}, format="json").json()["name"] == "Dogs"
    assert as_alice.delete(f"/api/v1/projects/{project.id}/").status_code == 204
    assert not Project.objects.exists()


def test_an_editor_renames_but_cannot_delete(as_alice: APIClient, project: Project, bob: User) -> None:
    as_alice.post(f"/api/v1/projects/{project.id}/members/", {"username": "bob", "role": "editor"}, format="json")
    from tests.conftest import client_for

    as_bob = client_for(bob)
    assert as_bob.patch(f"/api/v1/projects/{project.id}/", {"name": "Dogs"}, format="json").status_code == 200
    assert as_bob.delete(f"/api/v1/projects/{project.id}/").status_code == 403


def test_members_are_listed_and_added_by_the_owner(
    as_alice: APIClient, as_vera: APIClient, project: Project, bob: User
) -> None:
    members = as_alice.get(f"/api/v1/projects/{project.id}/members/").json()
    assert members == [{"username": "alice", "role": "owner"}, {"username": "vera", "role": "viewer"}]
    assert (
        as_vera.post(
            f"/api/v1/projects/{project.id}/members/", {"username": "bob", "role": "editor"}, format="json"
        ).status_code
        == 403
    )
    response = as_alice.post(
        f"/api/v1/projects/{project.id}/members/", {"username": "nobody", "role": "editor"}, format="json"
    )
    assert response.status_code == 400
    assert "nobody" in response.json()["error"]
    response = as_alice.post(
        f"/api/v1/projects/{project.id}/members/", {"username": "bob", "role": "boss"}, format="json"
    )
    assert response.status_code == 400
    response = as_alice.post(
        f"/api/v1/projects/{project.id}/members/", {"username": "bob", "role": "editor"}, format="json"
    )
    assert response.status_code == 201
    assert Membership.objects.get(project=project, user=bob).role == "editor"


def test_the_schema_is_served(db: None) -> None:
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/v1/images/{image_id}/segment" in response.content
