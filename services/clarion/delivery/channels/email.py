"""Email: to the user's address, the template's `email` block (subject, text, HTML); SendGrid, SMTP or a file
outbox."""

from __future__ import annotations

from typing import Any

from clarion.core.config import Settings
from clarion.core.db import FastPath
from clarion.delivery.channels.base import Channel, Provider, Sending, Sent, Skip
from clarion.delivery.providers.base import EmailMessage, EmailProvider
from clarion.delivery.providers.factory import create_email_provider, create_email_providers
from clarion.delivery.store import Claimed
from clarion.v1 import common_pb2, delivery_task_pb2, templates_pb2, users_pb2


class EmailChannel(Channel):
    name = "email"
    proto = common_pb2.CHANNEL_EMAIL
    queue = "email.queue"
    content = "email"
    switch = "email_enabled"

    def address_of(self, user: users_pb2.User) -> str:
        # Compared without regard to case: suppressions hold addresses in lower case.
        return user.email_address.lower()

    def payload(self, user: users_pb2.User, rendered: templates_pb2.RenderTemplateResponse) -> dict[str, Any] | Skip:
        if refused := self.refuses(user):
            return refused
        if not user.email_address:
            return Skip("no_email_address")
        return {
            "to": user.email_address,
            "subject": rendered.email.subject,
            "body": rendered.email.body,
            "html_body": rendered.email.html_body,
        }

    def rendered(self, payload: dict[str, Any]) -> templates_pb2.RenderedEmail | None:
        if "subject" not in payload:
            return None
        return templates_pb2.RenderedEmail(
            subject=str(payload["subject"]),
            body=str(payload.get("body", "")),
            html_body=str(payload.get("html_body", "")),
        )

    def fill_task(self, task: delivery_task_pb2.DeliveryTask, payload: dict[str, Any]) -> None:
        task.email.CopyFrom(
            delivery_task_pb2.EmailTask(
                to=str(payload.get("to", "")),
                subject=str(payload.get("subject", "")),
                body=str(payload.get("body", "")),
                html_body=str(payload.get("html_body", "")),
            )
        )

    def create_provider(self, settings: Settings, fast: FastPath | None = None) -> Provider:
        return create_email_provider(settings)

    def create_providers(self, settings: Settings, fast: FastPath | None = None) -> list[Provider]:
        return list(create_email_providers(settings))

    async def send(self, provider: EmailProvider, claimed: Claimed, sending: Sending) -> Sent:
        payload = claimed.payload
        message = EmailMessage(
            delivery_id=str(claimed.delivery_id),
            to=str(payload.get("to", "")),
            subject=str(payload.get("subject", "")),
            body=str(payload.get("body", "")),
            html_body=str(payload.get("html_body", "")),
        )
        attempt, message_id, error = await sending.call(provider.name, provider.send(message))
        return Sent([attempt], error, message_id)
