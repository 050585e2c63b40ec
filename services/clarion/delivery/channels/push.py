"""Push: to each of the user's devices, the template's `push` block (title, body, data); FCM, or a simulated
provider in local mode. One attempt per device still owed the push: the stored payload remembers which devices got
it (`sent_device_ids`) and which are finished either way (`done_device_ids`), so a retry goes only to the devices
that failed transiently."""

from __future__ import annotations

from typing import Any

from clarion.core.config import Settings
from clarion.core.db import FastPath
from clarion.delivery.channels.base import Channel, Provider, Sending, Sent, Skip
from clarion.delivery.providers.base import (
    ProviderError,
    PushMessage,
    PushProvider,
    TransientFailure,
    UnregisteredToken,
)
from clarion.delivery.providers.factory import create_push_provider
from clarion.delivery.store import Attempt, Claimed
from clarion.users.servicer import platform_name, platform_value
from clarion.v1 import common_pb2, delivery_task_pb2, templates_pb2, users_pb2


class PushChannel(Channel):
    name = "push"
    proto = common_pb2.CHANNEL_PUSH
    queue = "push.queue"
    content = "push"
    switch = "push_enabled"

    def payload(self, user: users_pb2.User, rendered: templates_pb2.RenderTemplateResponse) -> dict[str, Any] | Skip:
        if refused := self.refuses(user):
            return refused
        if not user.devices:
            return Skip("no_devices")
        return {
            "devices": [
                {"device_id": d.device_id, "token": d.token, "platform": platform_name(d.platform)}
                for d in user.devices
            ],
            "title": rendered.push.title,
            "body": rendered.push.body,
            "data": dict(rendered.push.data),
        }

    def rendered(self, payload: dict[str, Any]) -> templates_pb2.RenderedPush | None:
        if "title" not in payload:
            return None
        data = payload.get("data") or {}
        return templates_pb2.RenderedPush(
            title=str(payload["title"]),
            body=str(payload.get("body", "")),
            data={str(key): str(value) for key, value in data.items()},
        )

    def fill_task(self, task: delivery_task_pb2.DeliveryTask, payload: dict[str, Any]) -> None:
        task.push.CopyFrom(
            delivery_task_pb2.PushTask(
                devices=[
                    delivery_task_pb2.PushDevice(
                        device_id=str(device.get("device_id", "")),
                        token=str(device.get("token", "")),
                        platform=platform_value(str(device.get("platform", ""))),
                    )
                    for device in payload.get("devices", [])
                ],
                title=str(payload.get("title", "")),
                body=str(payload.get("body", "")),
                data={str(key): str(value) for key, value in payload.get("data", {}).items()},
            )
        )

    def create_provider(self, settings: Settings, fast: FastPath | None = None) -> Provider:
        return create_push_provider(settings)

    def partially_sent(self, payload: dict[str, Any]) -> bool:
        return bool(payload.get("sent_device_ids"))

    async def send(self, provider: PushProvider, claimed: Claimed, sending: Sending) -> Sent:
        payload = dict(claimed.payload)
        sent: list[str] = list(payload.get("sent_device_ids", []))
        done: list[str] = list(payload.get("done_device_ids", []))
        attempts: list[Attempt] = []
        message_ids: list[str] = []
        transient: TransientFailure | None = None
        permanent: ProviderError | None = None
        for device in payload.get("devices", []):
            device_id = str(device["device_id"])
            if device_id in done:
                continue
            message = PushMessage(
                delivery_id=str(claimed.delivery_id),
                device_id=device_id,
                token=str(device["token"]),
                platform=str(device.get("platform", "")),
                title=str(payload.get("title", "")),
                body=str(payload.get("body", "")),
                data={str(k): str(v) for k, v in payload.get("data", {}).items()},
            )
            attempt, message_id, error = await sending.call(provider.name, provider.send(message))
            attempts.append(attempt)
            if error is None:
                sent.append(device_id)
                done.append(device_id)
                message_ids.append(message_id)
            elif isinstance(error, TransientFailure):
                transient = error
            else:
                permanent = permanent or error
                done.append(device_id)
                if isinstance(error, UnregisteredToken):
                    await sending.forget_device(claimed.user_id, device_id)
        payload["sent_device_ids"], payload["done_device_ids"] = sent, done
        failure: ProviderError | None = transient or (permanent if not sent else None)
        return Sent(attempts, failure, ",".join(message_ids), payload=payload, partial_success=bool(sent))
