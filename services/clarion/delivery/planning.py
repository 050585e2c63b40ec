"""Planning a notification into one delivery per channel, once, when it is accepted (and, for notifications an
earlier release accepted without deliveries, when the dispatcher finds them): the content is rendered then and
pinned in the deliveries; each channel says what it needs from the user (clarion.delivery.channels); the user's
quiet hours defer a delivery unless the notification is critical.

A delivery due later (a scheduled send, or quiet hours) is checked again when it falls due (`recheck`): a channel
the user switched off meanwhile, an address suppressed meanwhile, or a user deleted meanwhile, skips it; quiet hours
that now cover its due time defer it again. The content and the recipients stay as planned: what was accepted is
what is sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from clarion.core.metrics import DELIVERIES_SKIPPED
from clarion.delivery.channels import CHANNELS, Channel, Skip
from clarion.delivery.lifecycle import DeliveryStatus, NotificationStatus, derive_notification_status
from clarion.delivery.store import Deferred, NewDelivery, Rechecked
from clarion.delivery.store.relay import QUIET_HOURS, SCHEDULED
from clarion.notifications.schedule import quiet_hours_end
from clarion.v1 import notifications_pb2, templates_pb2, users_pb2


def channels_of(requested: list[str], rendered: templates_pb2.RenderTemplateResponse) -> list[str]:
    """The channels asked for, or, when none was, every channel the template has content for."""
    return requested or [name for name, channel in CHANNELS.items() if channel.has_content(rendered)]


def _quiet_until(user: users_pb2.User, at: datetime, *, critical: bool) -> datetime | None:
    preferences = user.preferences
    if critical or not preferences.quiet_hours_start:
        return None
    return quiet_hours_end(
        at, start=preferences.quiet_hours_start, end=preferences.quiet_hours_end, timezone=user.timezone or "UTC"
    )


def _plan_channel(
    channel: Channel,
    notification_id: uuid.UUID,
    *,
    user: users_pb2.User,
    rendered: templates_pb2.RenderTemplateResponse,
    critical: bool,
    send_at: datetime,
    now: datetime,
    suppressed: Mapping[tuple[str, str], str],
) -> NewDelivery:
    def delivery(status: DeliveryStatus, reason: str, payload: dict[str, Any], due_at: datetime) -> NewDelivery:
        return NewDelivery(uuid.uuid4(), notification_id, channel.name, status, reason, payload, due_at)

    if not channel.has_content(rendered):
        return delivery(DeliveryStatus.SKIPPED, f"template_has_no_{channel.name}_content", {}, now)
    payload = channel.payload(user, rendered)
    if isinstance(payload, Skip):
        return delivery(DeliveryStatus.SKIPPED, payload.reason, {}, now)
    reason = suppressed.get((channel.name, channel.address_of(user)))
    if reason is not None:
        return delivery(DeliveryStatus.SKIPPED, f"suppressed_{reason}", {}, now)
    payload["locale"] = rendered.locale
    if send_at > now:
        # Quiet hours are judged when it falls due (recheck), with the user's settings of that day.
        return delivery(DeliveryStatus.QUEUED, SCHEDULED, payload, send_at)
    quiet_end = _quiet_until(user, now, critical=critical)
    if quiet_end is not None:
        return delivery(DeliveryStatus.QUEUED, QUIET_HOURS, payload, quiet_end)
    return delivery(DeliveryStatus.QUEUED, "", payload, now)


def plan(
    notification_id: uuid.UUID,
    *,
    channels: list[str],
    user: users_pb2.User,
    rendered: templates_pb2.RenderTemplateResponse,
    priority: int,
    send_at: datetime,
    now: datetime,
    suppressed: Mapping[tuple[str, str], str] | None = None,
) -> list[NewDelivery]:
    """One delivery per channel of `channels_of(channels, rendered)`, due at `send_at` (or later, for quiet
    hours); SKIPPED as `suppressed_<reason>` where the user's address on the channel is in `suppressed` (the
    project's suppressions of the recipients, by channel and address: `recipients`)."""
    critical = priority == notifications_pb2.PRIORITY_CRITICAL
    return [
        _plan_channel(
            CHANNELS[name],
            notification_id,
            user=user,
            rendered=rendered,
            critical=critical,
            send_at=send_at,
            now=now,
            suppressed=suppressed or {},
        )
        for name in channels_of(channels, rendered)
    ]


def recipients(user: users_pb2.User) -> list[tuple[str, str]]:
    """The user's addresses a project may suppress, by channel: what the accept looks up before it plans."""
    return [(name, address) for name, channel in CHANNELS.items() if (address := channel.address_of(user))]


def recheck(
    deferred: Deferred,
    user: users_pb2.User | None,
    *,
    now: datetime,
    suppressed: Mapping[tuple[str, str], str] | None = None,
) -> Rechecked:
    """What a deferred delivery that fell due at `now` becomes, for `user` as they are now (None: deleted) and its
    project's suppressions of the user's addresses (`suppressed`, as for `plan`): published now (QUEUED, no reason),
    held again (QUEUED, QUIET_HOURS, a later due time) or SKIPPED with a reason."""

    def becomes(status: DeliveryStatus, reason: str, due_at: datetime) -> Rechecked:
        return Rechecked(deferred, status, reason, due_at)

    if user is None:
        return becomes(DeliveryStatus.SKIPPED, "user_not_found", now)
    channel = CHANNELS[deferred.channel]
    refused = channel.refuses(user)
    if refused is not None:
        return becomes(DeliveryStatus.SKIPPED, refused.reason, now)
    reason = (suppressed or {}).get((channel.name, channel.address_of(user)))
    if reason is not None:
        return becomes(DeliveryStatus.SKIPPED, f"suppressed_{reason}", now)
    quiet_end = _quiet_until(user, now, critical=deferred.priority == notifications_pb2.PRIORITY_CRITICAL)
    if quiet_end is not None:
        return becomes(DeliveryStatus.QUEUED, QUIET_HOURS, quiet_end)
    return becomes(DeliveryStatus.QUEUED, "", now)


def count_skipped(deliveries: Iterable[NewDelivery]) -> None:
    """Count the deliveries planned as skipped, by channel and reason (a closed set: never user data)."""
    for delivery in deliveries:
        if delivery.status == DeliveryStatus.SKIPPED:
            DELIVERIES_SKIPPED.labels(channel=delivery.channel, reason=delivery.status_reason).inc()


def accepted_status(deliveries: list[NewDelivery], *, scheduled: bool) -> NotificationStatus:
    """A notification's status as accepted: SCHEDULED while its send time is ahead, ACCEPTED while a delivery waits
    (for a worker, or for the end of quiet hours), SKIPPED when no channel applies. The workers' outcomes (and the
    dispatcher's checks of deferred deliveries) move it on from there."""
    if any(d.status == DeliveryStatus.QUEUED for d in deliveries):
        return NotificationStatus.SCHEDULED if scheduled else NotificationStatus.ACCEPTED
    return derive_notification_status([d.status for d in deliveries])
