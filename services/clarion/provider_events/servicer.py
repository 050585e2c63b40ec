"""ProviderEventService: SendGrid's signed Event Webhook in. Open to callers without an API key (SendGrid sends
none): each request is authenticated by its ECDSA signature over the timestamp and the raw body, and refused
outside the replay window. The whole batch is applied in one transaction: kept once per event, its deliveries moved
on, the addresses of hard bounces, spam reports and unsubscribes suppressed."""

from __future__ import annotations

import time
from typing import Any

from grpc.aio import ServicerContext

from clarion.core.config import Settings, SettingsError
from clarion.core.db import FastPath
from clarion.core.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from clarion.core.logging import get_logger
from clarion.core.server import ServiceRegistration, service_registration
from clarion.provider_events import sendgrid
from clarion.provider_events import store as events_store
from clarion.provider_events.apply import PROVIDER, apply
from clarion.v1 import provider_events_pb2, provider_events_pb2_grpc

log = get_logger(__name__)
Context = ServicerContext[Any, Any]


def _header(context: Context, name: str) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str):
            return value
    return ""


class ProviderEventServicer(provider_events_pb2_grpc.ProviderEventServiceServicer):
    def __init__(self, *, fast: FastPath, settings: Settings) -> None:
        self._fast = fast
        self._max_age_s = settings.provider_events_max_age_s
        self._key = None
        if settings.sendgrid_webhook_public_key:
            try:
                self._key = sendgrid.load_public_key(settings.sendgrid_webhook_public_key)
            except sendgrid.BadKey as exc:
                raise SettingsError(f"CLARION_SENDGRID_WEBHOOK_PUBLIC_KEY: {exc}") from None

    async def ReceiveSendGridEvents(
        self, request: provider_events_pb2.ReceiveSendGridEventsRequest, context: Context
    ) -> provider_events_pb2.ReceiveProviderEventsResponse:
        if self._key is None:
            raise FailedPrecondition(
                "SendGrid's events are not taken: CLARION_SENDGRID_WEBHOOK_PUBLIC_KEY is not set",
                reason="PROVIDER_EVENTS_NOT_CONFIGURED",
            )
        body = request.http_body.data
        signature, stamp = _header(context, sendgrid.SIGNATURE_HEADER), _header(context, sendgrid.TIMESTAMP_HEADER)
        if not signature or not stamp:
            raise Unauthenticated(
                "SendGrid's signature headers are missing (X-Twilio-Email-Event-Webhook-Signature and -Timestamp)",
                reason="PROVIDER_SIGNATURE_MISSING",
            )
        # Read as a number only once it is a short run of ASCII digits: int() of thousands of digits, or of "²",
        # would fail (or overflow the float subtraction) before any signature was checked.
        if (
            len(stamp) > 12
            or not (stamp.isascii() and stamp.isdigit())
            or abs(time.time() - int(stamp)) > self._max_age_s
        ):
            raise Unauthenticated(
                f"the webhook timestamp is more than {self._max_age_s:g} s from now: a replay, or a clock off",
                reason="PROVIDER_SIGNATURE_EXPIRED",
            )
        if len(body) > sendgrid.MAX_BODY_BYTES or not sendgrid.signature_ok(self._key, signature, stamp, body):
            raise Unauthenticated("the webhook signature does not match the body", reason="PROVIDER_SIGNATURE_INVALID")
        try:
            parsed = list(sendgrid.events(body))
        except ValueError as exc:
            raise InvalidArgument.for_field("http_body", f"not SendGrid's events: {exc}") from None
        wellformed = [event for event in parsed if event is not None]
        async with self._fast.connection() as connection, connection.transaction():
            fresh_ids = await events_store.record(connection, PROVIDER, wellformed)
            fresh = [event for event in wellformed if event.event_id in fresh_ids]
            applied = await apply(connection, fresh)
        unmatched = sum(
            1 for event in fresh if event.delivery_id is None or event.delivery_id not in applied.projects
        ) + (len(parsed) - len(wellformed))
        log.info(
            "provider_events_received",
            provider=PROVIDER,
            received=len(parsed),
            fresh=len(fresh),
            applied=len(applied.event_ids),
        )
        return provider_events_pb2.ReceiveProviderEventsResponse(
            received=len(parsed),
            duplicates=len(wellformed) - len(fresh),
            applied=len(applied.event_ids),
            unmatched=unmatched,
        )


def registration(*, fast: FastPath, settings: Settings) -> ServiceRegistration:
    return service_registration(
        ProviderEventServicer(fast=fast, settings=settings),
        provider_events_pb2_grpc.add_ProviderEventServiceServicer_to_server,
        provider_events_pb2.DESCRIPTOR.services_by_name["ProviderEventService"],
    )
