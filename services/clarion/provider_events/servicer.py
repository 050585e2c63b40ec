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
from clarion.delivery import store as deliveries
from clarion.delivery.lifecycle import DeliveryStatus
from clarion.provider_events import sendgrid
from clarion.provider_events import store as events_store
from clarion.suppressions import store as suppressions
from clarion.v1 import provider_events_pb2, provider_events_pb2_grpc

log = get_logger(__name__)
Context = ServicerContext[Any, Any]
PROVIDER = "sendgrid"

# What each event does to its delivery (the status, and the reason it shows), and to the suppression list.
# The delivery's status_reason names the event that moved it.
_MOVES = {
    sendgrid.DELIVERED: (DeliveryStatus.DELIVERED, sendgrid.DELIVERED),
    sendgrid.DROPPED: (DeliveryStatus.DROPPED, sendgrid.DROPPED),
    sendgrid.BLOCKED: (DeliveryStatus.BOUNCED, sendgrid.BLOCKED),
}
_SUPPRESSES = {
    sendgrid.SPAM_REPORT: "spam_report",
    sendgrid.UNSUBSCRIBE: "unsubscribe",
    sendgrid.GROUP_UNSUBSCRIBE: "unsubscribe",
}


def _move(event: sendgrid.Event) -> tuple[DeliveryStatus, str] | None:
    if event.event == sendgrid.BOUNCE:
        # SendGrid reports a soft bounce (a block) as a bounce of type "blocked".
        soft = event.bounce_type == sendgrid.BLOCKED
        return DeliveryStatus.BOUNCED, sendgrid.BLOCKED if soft else sendgrid.BOUNCE
    return _MOVES.get(event.event)


def _suppression(event: sendgrid.Event) -> str | None:
    if event.event == sendgrid.BOUNCE and event.bounce_type != sendgrid.BLOCKED:
        return "hard_bounce"
    return _SUPPRESSES.get(event.event)


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
            reports = [
                deliveries.Report(event.delivery_id, *move, event.occurred_at)
                for event in fresh
                if event.delivery_id is not None and (move := _move(event)) is not None
            ]
            matched = [event.delivery_id for event in fresh if event.delivery_id is not None]
            reported = await deliveries.apply_reports(connection, reports, also=matched)
            applied = {
                event.event_id for event in fresh if event.delivery_id in reported.moved and _move(event) is not None
            }
            suppress: dict[tuple[str, str], tuple[str, sendgrid.Event]] = {}
            for event in fresh:
                project = reported.projects.get(event.delivery_id) if event.delivery_id else None
                reason = _suppression(event)
                if reason is not None and project is not None and event.email:
                    suppress.setdefault((project, event.email), (reason, event))
            # In (project, address) order: overlapping batches lock the same rows in the same order.
            for (project, address), (reason, event) in sorted(suppress.items()):
                detail = f"sendgrid {event.event} {event.event_id}"
                await suppressions.add(connection, project, "email", address, reason, detail)
                applied.add(event.event_id)

            await events_store.mark_applied(connection, PROVIDER, sorted(applied))
        unmatched = sum(
            1 for event in fresh if event.delivery_id is None or event.delivery_id not in reported.projects
        ) + (len(parsed) - len(wellformed))
        log.info(
            "provider_events_received", provider=PROVIDER, received=len(parsed), fresh=len(fresh), applied=len(applied)
        )
        return provider_events_pb2.ReceiveProviderEventsResponse(
            received=len(parsed),
            duplicates=len(wellformed) - len(fresh),
            applied=len(applied),
            unmatched=unmatched,
        )


def registration(*, fast: FastPath, settings: Settings) -> ServiceRegistration:
    return service_registration(
        ProviderEventServicer(fast=fast, settings=settings),
        provider_events_pb2_grpc.add_ProviderEventServiceServicer_to_server,
        provider_events_pb2.DESCRIPTOR.services_by_name["ProviderEventService"],
    )
