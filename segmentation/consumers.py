"""Websocket per project: members receive image status and mask changes as they happen."""

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404

from . import selectors
from .events import project_group


class ProjectConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        project_id = int(self.scope["url_route"]["kwargs"]["project_id"])
        try:
            await database_sync_to_async(selectors.role_in)(self.scope["user"], project_id)
        except Http404:
            await self.close(code=4404)
            return
        self.group = project_group(project_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def image_status(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {"type": "image.status", "image": event["image"], "status": event["status"], "error": event["error"]}
        )

    async def mask_saved(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "mask.saved", "image": event["image"], "mask": event["mask"]})

    async def mask_deleted(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "mask.deleted", "image": event["image"], "mask": event["mask"]})
