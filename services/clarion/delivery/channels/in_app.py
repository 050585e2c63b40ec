"""In-app: the template's in-app block (title, body, action URL, data) into the user's inbox (clarion.inbox), where
InboxService lists it and WatchInbox streams it. Its one provider is Clarion's own database: `inbox`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from clarion.core.config import Settings
from clarion.core.db import FastPath
from clarion.delivery.channels.base import Channel, Provider, Sending, Sent, Skip
from clarion.delivery.providers.base import PermanentFailure, TransientFailure
from clarion.delivery.store import Claimed, notification_project
from clarion.inbox import store
from clarion.v1 import common_pb2, delivery_task_pb2, templates_pb2, users_pb2


@dataclass(frozen=True, slots=True)
class InAppContent:
    """A delivery's rendered in-app message."""

    title: str
    body: str
    action_url: str
    data: dict[str, str]


class InboxProvider:
    """Puts messages in inboxes: a row in PostgreSQL and a NOTIFY to the user's watchers. Idempotent by delivery
    id, so a redelivered task or a retry after an unknown outcome never shows a message twice."""

    name = "inbox"

    def __init__(self, fast: FastPath) -> None:
        self._fast = fast

    async def send(self, claimed: Claimed, content: InAppContent) -> str:
        """Put the claimed delivery's message in its user's inbox; its id (the delivery's). Raises ProviderError
        only."""
        try:
            async with self._fast.connection() as connection:
                project = await notification_project(connection, claimed.notification_id)
                if project is None:
                    raise PermanentFailure("the notification no longer exists")
                message = store.NewMessage(
                    delivery_id=claimed.delivery_id,
                    notification_id=claimed.notification_id,
                    project_id=project,
                    user_id=claimed.user_id,
                    title=content.title,
                    body=content.body,
                    action_url=content.action_url,
                    data=content.data,
                )
                await store.put(connection, message)
        except asyncpg.ForeignKeyViolationError:
            raise PermanentFailure("the user no longer exists") from None
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise TransientFailure(f"the inbox could not be written: {type(exc).__name__}") from None
        return str(claimed.delivery_id)

    async def close(self) -> None:
        """Nothing of its own to release: the pool is the worker's."""


def _data(payload: dict[str, Any]) -> dict[str, str]:
    """The payload's data as strings (it is stored as JSON, and every reader wants a map of strings)."""
    return {str(key): str(value) for key, value in (payload.get("data") or {}).items()}


class InAppChannel(Channel):
    name = "in_app"
    proto = common_pb2.CHANNEL_IN_APP
    queue = "in_app.queue"
    content = "in_app"
    switch = "in_app_enabled"

    def payload(self, user: users_pb2.User, rendered: templates_pb2.RenderTemplateResponse) -> dict[str, Any] | Skip:
        if refused := self.refuses(user):
            return refused
        return {
            "title": rendered.in_app.title,
            "body": rendered.in_app.body,
            "action_url": rendered.in_app.action_url,
            "data": dict(rendered.in_app.data),
        }

    def rendered(self, payload: dict[str, Any]) -> templates_pb2.RenderedInApp | None:
        if "title" not in payload:
            return None
        return templates_pb2.RenderedInApp(
            title=str(payload["title"]),
            body=str(payload.get("body", "")),
            action_url=str(payload.get("action_url", "")),
            data=_data(payload),
        )

    def fill_task(self, task: delivery_task_pb2.DeliveryTask, payload: dict[str, Any]) -> None:
        task.in_app.CopyFrom(
            delivery_task_pb2.InAppTask(
                title=str(payload.get("title", "")),
                body=str(payload.get("body", "")),
                action_url=str(payload.get("action_url", "")),
                data=_data(payload),
            )
        )

    def create_provider(self, settings: Settings, fast: FastPath | None = None) -> Provider:
        if fast is None:
            raise ValueError("the in-app channel writes to the database: pass the worker's pool")
        return InboxProvider(fast)

    def create_providers(self, settings: Settings, fast: FastPath | None = None) -> list[Provider]:
        return [self.create_provider(settings, fast)]

    async def send(self, provider: InboxProvider, claimed: Claimed, sending: Sending) -> Sent:
        payload = claimed.payload
        content = InAppContent(
            title=str(payload.get("title", "")),
            body=str(payload.get("body", "")),
            action_url=str(payload.get("action_url", "")),
            data=_data(payload),
        )
        attempt, message_id, error = await sending.call(provider.name, provider.send(claimed, content))
        return Sent([attempt], error, message_id)
