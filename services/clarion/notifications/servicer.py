"""NotificationService over gRPC: durable, idempotent accept, and what became of each notification."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from grpc.aio import ServicerContext

from clarion.core.db import FastPath
from clarion.core.errors import (
    Aborted,
    AlreadyExists,
    ClarionError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    to_status,
)
from clarion.core.logging import get_logger
from clarion.core.metrics import NOTIFICATIONS_ACCEPTED, NOTIFICATIONS_REPLAYED
from clarion.core.pagination import decode_keyset, encode_page_token, page_size, position_time, position_uuid
from clarion.core.server import ServiceRegistration, service_registration
from clarion.core.tracing import current_traceparent
from clarion.core.validation import (
    Violations,
    is_valid_id,
    normalize_language_tag,
    parse_timestamp,
    struct_to_dict,
)
from clarion.delivery import planning, store
from clarion.delivery.channels import CHANNELS as REGISTRY
from clarion.delivery.lifecycle import NotificationStatus
from clarion.keys.auth import caller_project
from clarion.notifications.clients import ServiceClients, render_request
from clarion.notifications.convert import (
    CHANNEL_NAMES,
    dead_letter_to_proto,
    notification_to_proto,
    stats_to_proto,
)
from clarion.suppressions import store as suppressions
from clarion.templates.content import check_key
from clarion.templates.rendering import normalize_data
from clarion.users.repository import user_not_found
from clarion.v1 import common_pb2, notifications_pb2, notifications_pb2_grpc, templates_pb2, users_pb2

log = get_logger(__name__)

Context = ServicerContext[Any, Any]
MAX_DATA_BYTES = 64 * 1024
MAX_SCHEDULE_AHEAD = timedelta(days=366)
IDEMPOTENCY_HEADER = "x-idempotency-key"
# Label values for the accepted counter: "normal", "high", "critical".
PRIORITY_NAMES: dict[int, str] = {
    value: notifications_pb2.Priority.Name(value).removeprefix("PRIORITY_").lower()
    for value in notifications_pb2.Priority.values()
}
_PRIORITIES = {
    notifications_pb2.PRIORITY_UNSPECIFIED: notifications_pb2.PRIORITY_NORMAL,
    notifications_pb2.PRIORITY_NORMAL: notifications_pb2.PRIORITY_NORMAL,
    notifications_pb2.PRIORITY_HIGH: notifications_pb2.PRIORITY_HIGH,
    notifications_pb2.PRIORITY_CRITICAL: notifications_pb2.PRIORITY_CRITICAL,
}


# "CHANNEL_EMAIL or CHANNEL_PUSH": the channels the registry has, as the contracts name them.
_CHANNEL_CHOICES = " or ".join(common_pb2.Channel.Name(channel.proto) for channel in REGISTRY.values())


def _by_channel(delivery: store.NewDelivery) -> str:
    return delivery.channel  # the order every read gives


def _record(delivery: store.NewDelivery, now: datetime) -> store.DeliveryRecord:
    """A delivery just planned, as it was written."""
    return store.DeliveryRecord(
        id=delivery.id,
        notification_id=delivery.notification_id,
        channel=delivery.channel,
        status=delivery.status,
        status_reason=delivery.status_reason,
        due_at=delivery.due_at,
        published_at=None,
        attempt_count=0,
        lease_until=None,
        provider="",
        provider_message_id="",
        sent_at=None,
        created_at=now,
        updated_at=now,
    )


def notification_not_found(notification_id: str) -> NotFound:
    """The one NOT_FOUND every RPC gives for a missing notification (and for another project's)."""
    return NotFound(
        f"notification {notification_id!r} not found",
        reason="NOTIFICATION_NOT_FOUND",
        metadata={"notification_id": notification_id},
    )


def _idempotency_key(request: notifications_pb2.SendNotificationRequest, context: Context) -> str:
    header = next((str(v) for k, v in context.invocation_metadata() or () if k == IDEMPOTENCY_HEADER), "")
    key = request.request_id or header
    if request.request_id and header and request.request_id != header:
        raise InvalidArgument.for_field("request_id", "differs from the x-idempotency-key header; send one of them")
    return _checked_key(key, "request_id" if request.request_id else IDEMPOTENCY_HEADER)


def _checked_key(key: str, field: str) -> str:
    """An idempotency key ("" for none), or INVALID_ARGUMENT naming `field`."""
    if key and (len(key) > 255 or not key.isprintable()):
        raise InvalidArgument.for_field(field, "must be 1 to 255 printable characters")
    return key


def _key_race() -> Aborted:
    """A key that expired between the INSERT that found it taken and the look at who holds it."""
    return Aborted("the idempotency key changed hands; retry", reason="IDEMPOTENCY_KEY_RACE")


def _fingerprint(
    request: notifications_pb2.SendNotificationRequest, data: dict[str, Any], channels: list[str], priority: int
) -> str:
    """What makes two requests "the same request" for idempotency (`data`: message_data as sent, as a dict)."""
    canonical = {
        "user_id": request.user_id,
        "template_key": request.template_key,
        "template_version": request.template_version,
        "message_data": data,
        "channels": sorted(channels),
        "priority": priority,
        "send_at": request.send_at.ToJsonString() if request.HasField("send_at") else None,
        "locale": request.locale,
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _validate(request: notifications_pb2.SendNotificationRequest, now: datetime) -> tuple[list[str], int, datetime]:
    """Check every field at once; return the channel names, the priority and when it is due."""
    violations = Violations()
    if not request.user_id:
        violations.add("user_id", "is required")
    elif not is_valid_id(request.user_id):
        violations.add("user_id", "must be 1 to 63 letters, digits, '-' or '_'")
    try:
        check_key(request.template_key)
    except InvalidArgument as exc:
        violations.items.extend(exc.violations)
    violations.check(request.template_version >= 0, "template_version", "must be positive, or 0 for the latest")
    violations.check(
        request.message_data.ByteSize() <= MAX_DATA_BYTES, "message_data", f"must be at most {MAX_DATA_BYTES} bytes"
    )
    channels: list[str] = []
    for index, channel in enumerate(request.channels):
        name = CHANNEL_NAMES.get(channel)
        if name is None:
            violations.add(f"channels[{index}]", f"must be {_CHANNEL_CHOICES}")
        elif name not in channels:
            channels.append(name)
    priority = _PRIORITIES.get(request.priority)
    violations.check(priority is not None, "priority", "must be PRIORITY_NORMAL, PRIORITY_HIGH or PRIORITY_CRITICAL")
    due = now
    if request.HasField("send_at"):
        try:
            due = max(now, request.send_at.ToDatetime(tzinfo=UTC))
        except (ValueError, OverflowError):
            violations.add("send_at", "is not a valid time")
        violations.check(due <= now + MAX_SCHEDULE_AHEAD, "send_at", "must be within a year")
    if request.locale:
        normalize_language_tag(request.locale, "locale", violations)
    violations.raise_if_any()
    return channels, priority or notifications_pb2.PRIORITY_NORMAL, due


@dataclass(frozen=True, slots=True)
class _Checked:
    """A request that passed validation: what accepting it needs."""

    request: notifications_pb2.SendNotificationRequest
    key: str
    channels: list[str]
    priority: int
    due: datetime
    data: dict[str, Any]  # message_data, normalised for rendering
    fingerprint: str


def _check(request: notifications_pb2.SendNotificationRequest, key: str, now: datetime) -> _Checked:
    """Validate a request (every field at once); INVALID_ARGUMENT naming the fields."""
    channels, priority, due = _validate(request, now)
    raw_data = struct_to_dict(request.message_data, "message_data")
    fingerprint = _fingerprint(request, raw_data, channels, priority)
    return _Checked(request, key, channels, priority, due, normalize_data(raw_data), fingerprint)


def _accepted(
    checked: _Checked,
    user: users_pb2.User,
    rendered: templates_pb2.RenderTemplateResponse,
    *,
    now: datetime,
    project: str,
    suppressed: Mapping[tuple[str, str], str],
) -> store.Accepted:
    """The notification to record and its deliveries (clarion.delivery.planning), given its user, its rendering and
    the project's suppressions of the user's addresses; INVALID_ARGUMENT when the template has none of the channels
    asked for."""
    request, channels = checked.request, checked.channels
    offered = {name for name, channel in REGISTRY.items() if channel.has_content(rendered)}
    if channels and not offered.intersection(channels):
        raise InvalidArgument.for_field(
            "channels", f"template {request.template_key!r} has no content for {', '.join(channels)}"
        )
    notification_id = uuid.uuid4()
    deliveries = planning.plan(
        notification_id,
        channels=channels,
        user=user,
        rendered=rendered,
        priority=checked.priority,
        send_at=checked.due,
        now=now,
        suppressed=suppressed,
    )
    record = store.NotificationRecord(
        id=notification_id,
        project_id=project,
        user_id=request.user_id,
        template_key=request.template_key,
        template_version=rendered.version,
        message_data=checked.data,
        channels=channels,
        priority=checked.priority,
        locale=request.locale,
        request_id=checked.key or None,
        trace_request_id=str(structlog.contextvars.get_contextvars().get("request_id", "")),
        trace_parent=current_traceparent(),
        status=planning.accepted_status(deliveries, scheduled=checked.due > now),
        status_reason="",
        send_at=checked.due,
        created_at=now,
        updated_at=now,
    )
    return store.Accepted(record, deliveries, checked.fingerprint)


def _written(accepted: store.Accepted, now: datetime) -> notifications_pb2.SendNotificationResponse:
    """The answer for a notification just recorded: the view is what was written (no read-back queries)."""
    row = accepted.notification
    written = [_record(d, now) for d in sorted(accepted.deliveries, key=_by_channel)]
    NOTIFICATIONS_ACCEPTED.labels(priority=PRIORITY_NAMES[row.priority]).inc()
    planning.count_skipped(accepted.deliveries)
    log.info("notification_accepted", notification_id=str(row.id), status=row.status, template_key=row.template_key)
    return notifications_pb2.SendNotificationResponse(
        notification=notification_to_proto(store.NotificationView(row, written))
    )


def _key_reused(key: str, holder: store.KeyHolder) -> AlreadyExists:
    return AlreadyExists(
        "this idempotency key was already used for a different request; use a new key for a new request",
        reason="IDEMPOTENCY_KEY_REUSED",
        metadata={"idempotency_key": key, "notification_id": str(holder.notification_id)},
    )


class NotificationServicer(notifications_pb2_grpc.NotificationServiceServicer):
    """Accepting notifications and reporting what became of them."""

    def __init__(self, *, fast: FastPath, clients: ServiceClients, idempotency_ttl_s: float) -> None:
        self._fast = fast
        self._clients = clients
        self._idempotency_ttl = timedelta(seconds=idempotency_ttl_s)

    async def SendNotification(
        self, request: notifications_pb2.SendNotificationRequest, context: Context
    ) -> notifications_pb2.SendNotificationResponse:
        """Validate, check the user, render the template and plan the deliveries, and record the notification with
        them durably, in one statement; nothing is sent here."""
        now = datetime.now(UTC)
        checked = _check(request, _idempotency_key(request, context), now)
        key = checked.key
        # No lookup of the key first: the INSERT below says whether it is taken, which spares every new request a
        # round trip. A retry therefore goes through the checks again; if they now fail (its user deleted, say),
        # the original notification still answers for it.
        project = caller_project().project_id
        try:
            user = await self._clients.get_user(request.user_id)
            rendered = await self._clients.render(
                template_key=request.template_key,
                version=request.template_version,
                locale=request.locale or user.preferred_language,
                data=checked.data,
            )
            suppressed = await self._suppressed(project, planning.recipients(user))
            accepted = _accepted(checked, user, rendered, now=now, project=project, suppressed=suppressed)
        except ClarionError:
            holder = await self._key_holder(project, key) if key else None
            if holder is None:
                raise
            return await self._replay(key, holder, checked.fingerprint, project)
        async with self._fast.connection() as connection:
            inserted = await store.insert_notifications(
                connection, [accepted], project_id=project, now=now, key_expires_at=now + self._idempotency_ttl
            )
            winner = None if inserted else await store.find_key(connection, project, key)
        if not inserted:
            # Another request holds the key: it answers for both.
            if winner is None:  # it expired in between: vanishingly rare, and safe to ask again
                raise _key_race()
            return await self._replay(key, winner, checked.fingerprint, project)
        return _written(accepted, now)

    async def BatchSendNotifications(
        self, request: notifications_pb2.BatchSendNotificationsRequest, context: Context
    ) -> notifications_pb2.BatchSendNotificationsResponse:
        """Each request as SendNotification would take it, with one BatchGetUsers, one BatchRenderTemplates and one
        database statement for the batch; each result is its response or its error."""
        if any(k == IDEMPOTENCY_HEADER for k, _ in context.invocation_metadata() or ()):
            raise InvalidArgument.for_field(
                IDEMPOTENCY_HEADER, "does not apply to a batch: give each request its own request_id"
            )
        if not 0 < len(request.requests) <= MAX_BATCH_SEND:
            raise InvalidArgument.for_field("requests", f"give 1 to {MAX_BATCH_SEND} notifications")
        now = datetime.now(UTC)
        project = caller_project().project_id
        request_id = str(structlog.contextvars.get_contextvars().get("request_id", ""))
        outcomes: list[notifications_pb2.SendNotificationResponse | ClarionError | None] = [None] * len(
            request.requests
        )
        checked: dict[int, _Checked] = {}
        first_with_key: dict[str, int] = {}
        for index, item in enumerate(request.requests):
            try:
                checked[index] = _check(item, _checked_key(item.request_id, "request_id"), now)
            except ClarionError as exc:
                outcomes[index] = exc
                continue
            key = checked[index].key
            if key and key in first_with_key:
                outcomes[index] = InvalidArgument.for_field(
                    "request_id",
                    f"repeats the request_id of requests[{first_with_key[key]}]; a key names one notification",
                )
                del checked[index]
            elif key:
                first_with_key[key] = index
        accepted = await self._accept_batch(checked, outcomes, now=now, project=project)
        async with self._fast.connection() as connection:
            inserted = (
                await store.insert_notifications(
                    connection,
                    list(accepted.values()),
                    project_id=project,
                    now=now,
                    key_expires_at=now + self._idempotency_ttl,
                )
                if accepted
                else set()
            )
        for index, one in accepted.items():
            if one.notification.id in inserted:
                outcomes[index] = _written(one, now)
        # What was not written: its key is held by an earlier request (which answers for it, as for
        # SendNotification), or it failed its checks and its key may still be held.
        await self._answer_held_keys(
            {
                index: checked[index]
                for index, outcome in enumerate(outcomes)
                if index in checked and not isinstance(outcome, notifications_pb2.SendNotificationResponse)
            },
            outcomes,
            project=project,
        )
        results = []
        for outcome in outcomes:
            if isinstance(outcome, notifications_pb2.SendNotificationResponse):
                results.append(notifications_pb2.SendNotificationResult(response=outcome))
            else:
                error = outcome if outcome is not None else _key_race()
                results.append(notifications_pb2.SendNotificationResult(error=to_status(error, request_id=request_id)))
        return notifications_pb2.BatchSendNotificationsResponse(results=results)

    async def _accept_batch(
        self,
        checked: dict[int, _Checked],
        outcomes: list[notifications_pb2.SendNotificationResponse | ClarionError | None],
        *,
        now: datetime,
        project: str,
    ) -> dict[int, store.Accepted]:
        """The checked requests' users and renders, in one call each; the ones that can be recorded, by index (the
        others' errors go to `outcomes`)."""
        users = await self._clients.get_users([c.request.user_id for c in checked.values()])
        wanted: list[tuple[int, _Checked, users_pb2.User]] = []
        for index, c in checked.items():
            if (user := users.get(c.request.user_id)) is None:
                outcomes[index] = user_not_found(c.request.user_id)
            else:
                wanted.append((index, c, user))
        renders = await self._clients.render_many(
            [
                render_request(
                    template_key=c.request.template_key,
                    version=c.request.template_version,
                    locale=c.request.locale or user.preferred_language,
                    data=c.data,
                )
                for _, c, user in wanted
            ],
            field_prefix={"data": "message_data"},
        )
        suppressed = await self._suppressed(project, [r for _, _, user in wanted for r in planning.recipients(user)])
        accepted: dict[int, store.Accepted] = {}
        for (index, c, user), rendered in zip(wanted, renders, strict=True):
            try:
                if isinstance(rendered, ClarionError):
                    raise rendered
                accepted[index] = _accepted(c, user, rendered, now=now, project=project, suppressed=suppressed)
            except ClarionError as exc:
                outcomes[index] = exc
        return accepted

    async def _suppressed(self, project: str, recipients: list[tuple[str, str]]) -> Mapping[tuple[str, str], str]:
        """The project's suppressions among the recipients' addresses (one round trip; none without addresses)."""
        if not recipients:
            return {}
        async with self._fast.connection() as connection:
            return await suppressions.suppressed(connection, project, recipients)

    async def _answer_held_keys(
        self,
        unanswered: dict[int, _Checked],
        outcomes: list[notifications_pb2.SendNotificationResponse | ClarionError | None],
        *,
        project: str,
    ) -> None:
        """Requests whose key is held by an earlier request get that request's notification (replayed), or
        ALREADY_EXISTS when they differ from it; the others keep their outcome."""
        keyed = {index: c for index, c in unanswered.items() if c.key}
        if not keyed:
            return
        async with self._fast.connection() as connection:
            holders = await store.find_keys(connection, project, [c.key for c in keyed.values()])
            views = await store.get_views(
                connection, list({holder.notification_id for holder in holders.values()}), project=project
            )
        for index, c in keyed.items():
            holder = holders.get(c.key)
            if holder is None:
                continue  # not held: its own error stands (or, inserted by nobody, ABORTED: retry)
            if holder.fingerprint != c.fingerprint:
                outcomes[index] = _key_reused(c.key, holder)
            elif (view := views.get(holder.notification_id)) is not None:
                NOTIFICATIONS_REPLAYED.inc()
                outcomes[index] = notifications_pb2.SendNotificationResponse(
                    notification=notification_to_proto(view), replayed=True
                )

    async def _key_holder(self, project: str, key: str) -> store.KeyHolder | None:
        async with self._fast.connection() as connection:
            return await store.find_key(connection, project, key)

    async def _replay(
        self, key: str, holder: store.KeyHolder, fingerprint: str, project: str
    ) -> notifications_pb2.SendNotificationResponse:
        if holder.fingerprint != fingerprint:
            raise _key_reused(key, holder)
        view = await self._view(holder.notification_id, project=project)
        NOTIFICATIONS_REPLAYED.inc()
        log.info("notification_replayed", notification_id=str(holder.notification_id))
        return notifications_pb2.SendNotificationResponse(notification=notification_to_proto(view), replayed=True)

    async def GetNotification(
        self, request: notifications_pb2.GetNotificationRequest, context: Context
    ) -> notifications_pb2.Notification:
        """A notification with each channel's delivery and its attempts."""
        notification_id = _parse_id(request.notification_id)
        view = await self._view(notification_id, project=caller_project().readable, payloads=True)
        return notification_to_proto(view)

    async def _view(
        self, notification_id: uuid.UUID, *, project: str | None, payloads: bool = False
    ) -> store.NotificationView:
        async with self._fast.connection() as connection:
            view = await store.get_view(connection, notification_id, project=project, payloads=payloads)
        if view is None:
            raise notification_not_found(str(notification_id))
        return view

    async def ListNotifications(
        self, request: notifications_pb2.ListNotificationsRequest, context: Context
    ) -> notifications_pb2.ListNotificationsResponse:
        """Newest first, filtered by user, status and channel, a page at a time."""
        limit = page_size(request.page_size)
        violations = Violations()
        if request.user_id:
            violations.check(is_valid_id(request.user_id), "user_id", "must be 1 to 63 letters, digits, '-' or '_'")
        known = NotificationStatus.from_proto(request.status)
        status = known.value if known is not None else ""
        violations.check(
            request.status == notifications_pb2.NOTIFICATION_STATUS_UNSPECIFIED or bool(status), "status", "unknown"
        )
        channel = CHANNEL_NAMES.get(request.channel, "")
        violations.check(request.channel == common_pb2.CHANNEL_UNSPECIFIED or bool(channel), "channel", "unknown")
        start = parse_timestamp(request, "create_time_start", violations)
        end = parse_timestamp(request, "create_time_end", violations)
        if start is not None and end is not None:
            violations.check(start < end, "create_time_end", "must be after create_time_start")
        violations.raise_if_any()
        filters = {
            "user_id": request.user_id,
            "status": status,
            "channel": channel,
            "start": start.isoformat() if start else "",
            "end": end.isoformat() if end else "",
        }
        before = decode_keyset(request.page_token, filters, _time_and_id)
        async with self._fast.connection() as connection:
            views = await store.list_views(
                connection,
                project=caller_project().readable,
                user_id=request.user_id,
                status=status,
                channel=channel,
                created=(start, end),
                before=before,
                limit=limit + 1,
            )
        response = notifications_pb2.ListNotificationsResponse(
            notifications=[notification_to_proto(v) for v in views[:limit]]
        )
        if len(views) > limit:
            last = views[limit - 1].notification
            response.next_page_token = encode_page_token([last.created_at.isoformat(), str(last.id)], filters)
        return response

    async def CancelNotification(
        self, request: notifications_pb2.CancelNotificationRequest, context: Context
    ) -> notifications_pb2.Notification:
        """Cancel whatever has not been handed to a provider yet."""
        notification_id = _parse_id(request.notification_id)
        project = caller_project().project_id  # reading every project is no licence to cancel in any
        async with self._fast.connection() as connection:
            cancelled = await store.cancel(connection, notification_id, project=project)
        if cancelled is None:
            raise notification_not_found(str(notification_id))
        if not cancelled:
            raise FailedPrecondition(
                "nothing left to cancel: every delivery was already handed to a provider or finished",
                reason="NOTIFICATION_NOT_CANCELLABLE",
                metadata={"notification_id": str(notification_id)},
            )
        view = await self._view(notification_id, project=project)
        log.info("notification_cancelled", notification_id=str(notification_id))
        return notification_to_proto(view)

    async def ListDeadLetters(
        self, request: notifications_pb2.ListDeadLettersRequest, context: Context
    ) -> notifications_pb2.ListDeadLettersResponse:
        """Deliveries that failed for good, most recent first."""
        limit = page_size(request.page_size)
        channel, user_id = _filter_fields(request.channel, request.user_id)
        filters = {"channel": channel, "user_id": user_id}
        before = decode_keyset(request.page_token, filters, _time_and_id)
        async with self._fast.connection() as connection:
            rows = await store.dead_letters(
                connection,
                project=caller_project().readable,
                channel=channel,
                user_id=user_id,
                before=before,
                limit=limit + 1,
            )
        response = notifications_pb2.ListDeadLettersResponse(
            dead_letters=[dead_letter_to_proto(r) for r in rows[:limit]]
        )
        if len(rows) > limit:
            last = rows[limit - 1].delivery
            response.next_page_token = encode_page_token([last.updated_at.isoformat(), str(last.id)], filters)
        return response

    async def ReplayDeadLetters(
        self, request: notifications_pb2.ReplayDeadLettersRequest, context: Context
    ) -> notifications_pb2.ReplayDeadLettersResponse:
        """Queue dead letters again under their delivery ids, by id or by filter."""
        channel, user_id = _filter_fields(request.channel, request.user_id)
        has_filter = bool(channel or user_id or request.HasField("failed_after") or request.all)
        violations = Violations()
        if request.delivery_ids and has_filter:
            violations.add("delivery_ids", "give either delivery_ids or a filter, not both")
        if not request.delivery_ids and not has_filter:
            violations.add("delivery_ids", "give delivery_ids, or a filter (channel, user_id, failed_after) or all")
        violations.check(len(request.delivery_ids) <= MAX_REPLAY, "delivery_ids", f"at most {MAX_REPLAY} per call")
        failed_after = parse_timestamp(request, "failed_after", violations)
        ids: list[uuid.UUID] = []
        for index, value in enumerate(request.delivery_ids):
            try:
                ids.append(uuid.UUID(value))
            except ValueError:
                violations.add(f"delivery_ids[{index}]", "is not a delivery id")
        violations.raise_if_any()
        async with self._fast.connection() as connection:
            replayed = await store.replay(
                connection,
                project=caller_project().project_id,
                ids=ids,
                channel=channel,
                user_id=user_id,
                failed_after=failed_after,
                limit=MAX_REPLAY,
            )
        log.info("dead_letters_replayed", count=len(replayed))
        done = {str(i) for i in replayed}
        return notifications_pb2.ReplayDeadLettersResponse(
            delivery_ids=sorted(done), not_replayed_ids=[i for i in request.delivery_ids if i not in done]
        )

    async def GetDeliveryStats(
        self, request: notifications_pb2.GetDeliveryStatsRequest, context: Context
    ) -> notifications_pb2.DeliveryStats:
        """Counts by status, success rate and time to send of the deliveries created in a window."""
        violations = Violations()
        channel = CHANNEL_NAMES.get(request.channel, "")
        violations.check(request.channel == common_pb2.CHANNEL_UNSPECIFIED or bool(channel), "channel", "unknown")
        if request.provider:
            violations.check(
                bool(_PROVIDER.match(request.provider)), "provider", "must be a provider name such as sendgrid"
            )
        end = parse_timestamp(request, "end_time", violations) or datetime.now(UTC)
        start = parse_timestamp(request, "start_time", violations) or end - DEFAULT_STATS_WINDOW
        violations.check(start < end, "end_time", "must be after start_time")
        violations.check(end - start <= MAX_STATS_WINDOW, "start_time", "the window must be at most 366 days")
        violations.raise_if_any()
        async with self._fast.connection() as connection:
            stats = await store.delivery_stats(
                connection,
                start=start,
                end=end,
                channel=channel,
                provider=request.provider,
                project=caller_project().readable,
            )
        return stats_to_proto(stats)


MAX_REPLAY = 1000
MAX_BATCH_SEND = 500
DEFAULT_STATS_WINDOW = timedelta(hours=24)
MAX_STATS_WINDOW = timedelta(days=366)
_PROVIDER = re.compile(r"^[a-z0-9_-]{1,32}$")


def _filter_fields(channel: int, user_id: str) -> tuple[str, str]:
    violations = Violations()
    name = CHANNEL_NAMES.get(channel, "")  # type: ignore[call-overload]
    violations.check(channel == common_pb2.CHANNEL_UNSPECIFIED or bool(name), "channel", "unknown")
    if user_id:
        violations.check(is_valid_id(user_id), "user_id", "must be 1 to 63 letters, digits, '-' or '_'")
    violations.raise_if_any()
    return name, user_id


def _time_and_id(position: list[Any]) -> tuple[datetime, uuid.UUID]:
    return position_time(position[0]), position_uuid(position[1])


def _parse_id(value: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument.for_field("notification_id", "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise notification_not_found(value) from None


def registration(*, fast: FastPath, clients: ServiceClients, idempotency_ttl_s: float) -> ServiceRegistration:
    """How to add NotificationService to a server."""
    return service_registration(
        NotificationServicer(fast=fast, clients=clients, idempotency_ttl_s=idempotency_ttl_s),
        notifications_pb2_grpc.add_NotificationServiceServicer_to_server,
        notifications_pb2.DESCRIPTOR.services_by_name["NotificationService"],
    )
