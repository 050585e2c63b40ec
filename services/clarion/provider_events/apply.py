"""Applying provider events: what each of SendGrid's events does to its delivery and to the suppression list, for a
batch just received (ProviderEventService) and, later, for the events that arrived before their delivery was
recorded SENT (the sweeper's `apply_pending`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from clarion.core.logging import get_logger
from clarion.delivery import store as deliveries
from clarion.delivery.lifecycle import DeliveryStatus
from clarion.provider_events import sendgrid
from clarion.provider_events import store as events_store
from clarion.suppressions import store as suppressions

log = get_logger(__name__)
PROVIDER = "sendgrid"

# The delivery's status_reason names the event that moved it.
_MOVES = {
    sendgrid.DELIVERED: (DeliveryStatus.DELIVERED, sendgrid.DELIVERED),
    sendgrid.DROPPED: (DeliveryStatus.DROPPED, sendgrid.DROPPED),
    sendgrid.BLOCKED: (DeliveryStatus.BOUNCED, sendgrid.BLOCKED),
}
# The events that move a delivery: the ones worth applying again when they came too early.
MOVING_EVENTS = (*_MOVES, sendgrid.BOUNCE)
_SUPPRESSES = {
    sendgrid.SPAM_REPORT: "spam_report",
    sendgrid.UNSUBSCRIBE: "unsubscribe",
    sendgrid.GROUP_UNSUBSCRIBE: "unsubscribe",
}
# An early event is applied again by the sweeper once it is this old (its delivery's worker has committed by then,
# or it never will), and no longer after the second figure.
PENDING_SETTLE_S = 5.0
PENDING_WITHIN_S = 3600.0


def move_of(event: sendgrid.Event) -> tuple[DeliveryStatus, str] | None:
    """The status an event moves its delivery to, and the reason shown; None for an event that moves nothing."""
    if event.event == sendgrid.BOUNCE:
        # SendGrid reports a soft bounce (a block) as a bounce of type "blocked".
        soft = event.bounce_type == sendgrid.BLOCKED
        return DeliveryStatus.BOUNCED, sendgrid.BLOCKED if soft else sendgrid.BOUNCE
    return _MOVES.get(event.event)


def suppression_of(event: sendgrid.Event) -> str | None:
    """The suppression reason an event puts its address under; None for one that suppresses nothing."""
    if event.event == sendgrid.BOUNCE and event.bounce_type != sendgrid.BLOCKED:
        return "hard_bounce"
    return _SUPPRESSES.get(event.event)


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying a batch changed: the events that moved a delivery or suppressed an address, and the deliveries
    found (by event)."""

    event_ids: set[str]
    projects: dict[uuid.UUID, str]


async def apply(connection: asyncpg.Connection, events: Sequence[sendgrid.Event]) -> Applied:
    """Apply events (kept already, not applied before) inside the caller's transaction, and mark those that changed
    something applied."""
    reports = [
        deliveries.Report(event.delivery_id, *move, event.occurred_at)
        for event in events
        if event.delivery_id is not None and (move := move_of(event)) is not None
    ]
    matched = [event.delivery_id for event in events if event.delivery_id is not None]
    reported = await deliveries.apply_reports(connection, reports, also=matched)
    applied = {event.event_id for event in events if event.delivery_id in reported.moved and move_of(event)}
    suppress: dict[tuple[str, str], tuple[str, sendgrid.Event]] = {}
    for event in events:
        project = reported.projects.get(event.delivery_id) if event.delivery_id else None
        reason = suppression_of(event)
        if reason is not None and project is not None and event.email:
            suppress.setdefault((project, event.email), (reason, event))
    # In (project, address) order: overlapping batches lock the same rows in the same order.
    for (project, address), (reason, event) in sorted(suppress.items()):
        await suppressions.add(
            connection, project, "email", address, reason, f"sendgrid {event.event} {event.event_id}"
        )
        applied.add(event.event_id)
    await events_store.mark_applied(connection, PROVIDER, sorted(applied))
    return Applied(applied, reported.projects)


async def apply_pending(connection: asyncpg.Connection, *, limit: int = 500) -> int:
    """Apply again the events that came before their delivery was recorded SENT (a provider can report `delivered`
    within the moment between its answer and the worker's commit), for an hour after they arrived. How many changed
    something now."""
    kept = await events_store.pending(
        connection, PROVIDER, MOVING_EVENTS, settle_s=PENDING_SETTLE_S, within_s=PENDING_WITHIN_S, limit=limit
    )
    events = [event for detail in kept if (event := sendgrid.read_event(detail)) is not None]
    if not events:
        return 0
    async with connection.transaction():
        applied = await apply(connection, events)
    if applied.event_ids:
        log.info("provider_events_applied_late", provider=PROVIDER, count=len(applied.event_ids))
    return len(applied.event_ids)
