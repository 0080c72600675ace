"""The project websocket: members hear about their project's images and masks; outsiders are refused."""

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from segmentation import events
from segmentation.consumers import ProjectConsumer
from segmentation.models import Project


def connect(user: User, project_id: int) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(ProjectConsumer.as_asgi(), f"/ws/projects/{project_id}/")
    communicator.scope["user"] = user
    communicator.scope["url_route"] = {"kwargs": {"project_id": project_id}}
    return communicator


@pytest.mark.django_db(transaction=True)
def test_a_member_receives_project_events(alice: User, project: Project) -> None:
    async def scenario() -> Any:
        communicator = connect(alice, project.id)
        connected, _ = await communicator.connect()
        assert connected
        from channels.layers import get_channel_layer

        await get_channel_layer().group_send(
            events.project_group(project.id), {"type": "image.status", "image": 7, "status": "ready", "error": ""}
        )
        message = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return message

    assert async_to_sync(scenario)() == {"type": "image.status", "image": 7, "status": "ready", "error": ""}


@pytest.mark.django_db(transaction=True)
def test_an_outsider_is_refused(bob: User, project: Project) -> None:
    async def scenario() -> Any:
        communicator = connect(bob, project.id)
        connected, code = await communicator.connect()
        return connected, code

    assert async_to_sync(scenario)() == (False, 4404)
