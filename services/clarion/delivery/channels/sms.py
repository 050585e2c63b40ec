"""SMS: to the user's phone number (E.164), the template's `sms_body`; Twilio, or in local mode a file outbox (or a
simulated provider). A rendering longer than MAX_SMS_SEGMENTS segments is not sent: the delivery is skipped as
`sms_too_long` when it is planned, where the template's author can see it, rather than cut or billed as a dozen
messages."""

from __future__ import annotations

from typing import Any

from clarion.core.config import Settings
from clarion.core.db import FastPath
from clarion.delivery.channels.base import Channel, Provider, Sending, Sent, Skip
from clarion.delivery.providers.base import SmsMessage, SmsProvider
from clarion.delivery.providers.factory import create_sms_provider
from clarion.delivery.sms_text import MAX_SMS_SEGMENTS, measure
from clarion.delivery.store import Claimed
from clarion.v1 import common_pb2, delivery_task_pb2, templates_pb2, users_pb2


class SmsChannel(Channel):
    name = "sms"
    proto = common_pb2.CHANNEL_SMS
    queue = "sms.queue"
    content = "sms"
    switch = "sms_enabled"

    def address_of(self, user: users_pb2.User) -> str:
        return user.phone_number

    def payload(self, user: users_pb2.User, rendered: templates_pb2.RenderTemplateResponse) -> dict[str, Any] | Skip:
        if refused := self.refuses(user):
            return refused
        if not user.phone_number:
            return Skip("no_phone_number")
        body = rendered.sms.body
        if not body.strip():
            return Skip("sms_empty")
        if measure(body).segments > MAX_SMS_SEGMENTS:
            return Skip("sms_too_long")
        return {"to": user.phone_number, "body": body}

    def rendered(self, payload: dict[str, Any]) -> templates_pb2.RenderedSms | None:
        if "body" not in payload:
            return None
        body = str(payload["body"])
        text = measure(body)
        return templates_pb2.RenderedSms(body=body, segments=text.segments, encoding=text.encoding)

    def fill_task(self, task: delivery_task_pb2.DeliveryTask, payload: dict[str, Any]) -> None:
        task.sms.CopyFrom(delivery_task_pb2.SmsTask(to=str(payload.get("to", "")), body=str(payload.get("body", ""))))

    def create_provider(self, settings: Settings, fast: FastPath | None = None) -> Provider:
        return create_sms_provider(settings)

    async def send(self, provider: SmsProvider, claimed: Claimed, sending: Sending) -> Sent:
        payload = claimed.payload
        message = SmsMessage(
            delivery_id=str(claimed.delivery_id), to=str(payload.get("to", "")), body=str(payload.get("body", ""))
        )
        attempt, message_id, error = await sending.call(provider.name, provider.send(message))
        return Sent([attempt], error, message_id)
