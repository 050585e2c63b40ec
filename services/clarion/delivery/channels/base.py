"""What a channel is: one module that says what it needs from the user, which content block of a template it
renders, which queue carries its work, which providers serve it and how a claimed delivery is sent with one. The
dispatcher plans and the workers send through this interface alone; adding a channel is one module beside
email.py, push.py, sms.py and in_app.py, registered in clarion.delivery.channels, plus its provider."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from google.protobuf.message import Message

from clarion.core.config import Settings
from clarion.core.db import FastPath
from clarion.delivery.providers.base import ProviderError
from clarion.delivery.store import Attempt, Claimed
from clarion.v1 import common_pb2, delivery_task_pb2, templates_pb2, users_pb2


@dataclass(frozen=True, slots=True)
class Skip:
    """The channel does not apply to this user and message; `reason` is a closed set (a metric label), never user
    data."""

    reason: str


class Provider(Protocol):
    """What every channel's providers share."""

    name: str

    async def close(self) -> None: ...


class Sending(Protocol):
    """What a worker lends its channel for one delivery's sends."""

    async def call(self, provider: str, send: Awaitable[str]) -> tuple[Attempt, str, ProviderError | None]:
        """One provider call, traced, timed and counted by the breaker: (attempt, provider's message id, error)."""
        ...

    async def forget_device(self, user_id: str, device_id: str) -> None:
        """Remove a device whose token the provider says is gone for good."""
        ...


@dataclass(frozen=True, slots=True)
class Sent:
    """What one claimed delivery's provider calls came to."""

    attempts: list[Attempt]
    error: ProviderError | None  # None: sent
    message_id: str = ""
    payload: dict[str, Any] | None = None  # stored instead of the claimed payload (what a retry must not resend)
    partial_success: bool = False  # some of its messages went out (a push to several devices)


class Channel(ABC):
    """One channel. Subclasses set the class attributes and implement the four methods."""

    name: ClassVar[str]  # as stored in deliveries.channel and used in metric labels: "email"
    proto: ClassVar[common_pb2.Channel.ValueType]  # its clarion.v1.Channel value
    queue: ClassVar[str]  # its work queue's logical name
    content: ClassVar[str]  # the content block it renders: a field of RenderTemplateResponse
    switch: ClassVar[str]  # the user's Preferences field that turns it on and off: "email_enabled"

    def has_content(self, rendered: templates_pb2.RenderTemplateResponse) -> bool:
        """Whether the rendered template has this channel's content block."""
        return rendered.HasField(self.content)  # type: ignore[arg-type]

    def refuses(self, user: users_pb2.User) -> Skip | None:
        """Why the user does not take this channel (switched off in their preferences), or None. Asked when the
        delivery is planned, and again when a deferred one falls due. Unset means on: a user stored (or cached)
        before a channel's switch existed takes it, as one who never said otherwise."""
        preferences = user.preferences
        on = getattr(preferences, self.switch) if preferences.HasField(self.switch) else True  # type: ignore[arg-type]
        return None if on else Skip(f"{self.name}_disabled_by_user")

    def address_of(self, user: users_pb2.User) -> str:
        """The user's address on this channel as a project may suppress it (clarion.suppressions): "" for a channel
        without one (push goes to devices, in-app to the user)."""
        return ""

    @abstractmethod
    def payload(self, user: users_pb2.User, rendered: templates_pb2.RenderTemplateResponse) -> dict[str, Any] | Skip:
        """The delivery's stored payload (recipients and rendered content, JSON-able), or why the channel does not
        apply to `user` (refused, no address, no device). Called only when the template has the content."""

    @abstractmethod
    def rendered(self, payload: dict[str, Any]) -> Message | None:
        """The payload's rendered content as the RenderTemplateResponse field `content` holds it (RenderedEmail,
        RenderedPush), without the recipients; None when the payload has none (a delivery skipped before it)."""

    @abstractmethod
    def fill_task(self, task: delivery_task_pb2.DeliveryTask, payload: dict[str, Any]) -> None:
        """Put the payload into the task's part for this channel (clarion.v1.DeliveryTask's oneof)."""

    @abstractmethod
    def create_provider(self, settings: Settings, fast: FastPath | None = None) -> Provider:
        """The provider the settings choose; SettingsError (naming the variable) when they are inconsistent. `fast`
        is the worker's database pool, for a channel Clarion delivers itself (in-app)."""

    def create_providers(self, settings: Settings, fast: FastPath | None = None) -> list[Provider]:
        """The providers in order of preference (the worker fails over down the list); one unless the channel
        takes a list of its own (CLARION_EMAIL_PROVIDERS)."""
        return [self.create_provider(settings, fast)]

    @abstractmethod
    async def send(self, provider: Any, claimed: Claimed, sending: Sending) -> Sent:
        """Send a claimed delivery (its payload as stored) with `provider`, every call through `sending`."""

    def partially_sent(self, payload: dict[str, Any]) -> bool:
        """Whether an earlier attempt already got some of the delivery out (then exhausting it is not a failure)."""
        return False
