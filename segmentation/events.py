"""Live updates: every change a teammate should see is pushed to the project's Channels group.

Channels delivers at most once, so pages refetch state after a reconnect; these events only save them
from polling.
"""

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def project_group(project_id: int) -> str:
    return f"project_{project_id}"


def send_project_event(project_id: int, event_type: str, payload: dict[str, Any]) -> None:
    """`event_type` like "image.status"; the consumer handles it in `image_status`."""
    layer = get_channel_layer()
    if layer is None:
        return
    async_to_sync(layer.group_send)(project_group(project_id), {"type": event_type, **payload})
