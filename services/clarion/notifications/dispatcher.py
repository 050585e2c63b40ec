"""The dispatcher: turns due notifications into one delivery per channel, then publishes due deliveries.

Both tables are outboxes (DESIGN.md, "Message flow"). A pass claims rows with `FOR UPDATE SKIP LOCKED` in short
transactions, so several dispatchers can run at once; anything committed but not yet published (a crash, a broker
outage, quiet hours that just ended) goes out on a later pass. LISTEN/NOTIFY wakes it; a poll interval backs that up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from opentelemetry.trace import SpanKind
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clarion.core.broker import EMAIL_QUEUE, FAILED_QUEUE, PUSH_QUEUE, Broker, BrokerError, BrokerUnavailable, Message
from clarion.core.db import asyncpg_dsn
from clarion.core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from clarion.core.logging import get_logger
from clarion.core.metrics import (
    DEAD_LETTERS,
    DELIVERIES_PUBLISHED,
    DELIVERIES_SKIPPED,
    DISPATCHER_LAG,
    QUEUE_MESSAGES,
)
from clarion.core.tracing import from_traceparent, inject, tracer
from clarion.notifications import models as m
from clarion.notifications.clients import ServiceClients
from clarion.notifications.repository import DISPATCH_CHANNEL, NotificationRepository
from clarion.notifications.schedule import quiet_hours_end
from clarion.notifications.status import derive_status
from clarion.users.servicer import platform_name
from clarion.v1 import notifications_pb2, templates_pb2, users_pb2

log = get_logger(__name__)

QUEUES = {"email": EMAIL_QUEUE, "push": PUSH_QUEUE}
# How many notifications of a batch are planned (user and template looked up) at once.
_PLAN_CONCURRENCY = 16
# How often the dispatcher samples the gauges that need a query (lag, dead letters, queue depths): often enough for
# alerts, rare enough to cost nothing next to a pass.
GAUGE_INTERVAL_S = 5.0


class _Later(Exception):
    """A dependency is unavailable: leave the notification for a later pass."""


@dataclass
class _Plan:
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""  # set when there can be no deliveries at all


def _channel_plan(
    channel: str,
    *,
    user: users_pb2.User,
    rendered: templates_pb2.RenderTemplateResponse,
    critical: bool,
    now: datetime,
) -> tuple[str, str, datetime, dict[str, Any]]:
    """(status, reason, due, payload) of one channel's delivery."""
    if not (rendered.HasField("email") if channel == "email" else rendered.HasField("push")):
        return m.SKIPPED, f"template_has_no_{channel}_content", now, {}
    if channel == "email":
        if not user.preferences.email_enabled:
            return m.SKIPPED, "email_disabled_by_user", now, {}
        if not user.email_address:
            return m.SKIPPED, "no_email_address", now, {}
        payload: dict[str, Any] = {
            "to": user.email_address,
            "subject": rendered.email.subject,
            "body": rendered.email.body,
            "html_body": rendered.email.html_body,
        }
    else:
        if not user.preferences.push_enabled:
            return m.SKIPPED, "push_disabled_by_user", now, {}
        if not user.devices:
            return m.SKIPPED, "no_devices", now, {}
        payload = {
            "devices": [
                {"device_id": d.device_id, "token": d.token, "platform": platform_name(d.platform)}
                for d in user.devices
            ],
            "title": rendered.push.title,
            "body": rendered.push.body,
            "data": dict(rendered.push.data),
        }
    payload["locale"] = rendered.locale
    quiet_end = None
    if not critical and user.preferences.quiet_hours_start:
        quiet_end = quiet_hours_end(
            now,
            start=user.preferences.quiet_hours_start,
            end=user.preferences.quiet_hours_end,
            timezone=user.timezone or "UTC",
        )
    if quiet_end is not None:
        return m.QUEUED, "quiet_hours", quiet_end, payload
    return m.QUEUED, "", now, payload


class Dispatcher:
    """Plans due notifications into deliveries and publishes due deliveries to the broker."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clients: ServiceClients,
        broker: Broker,
        database_url: str,
        batch_size: int = 100,
        poll_interval_s: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._clients = clients
        self._broker = broker
        self._dsn = asyncpg_dsn(database_url)
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until `stop` is set; a pass that fails is logged and retried after the poll interval."""
        listener = asyncio.create_task(self._listen(stop), name="dispatcher-listen")
        sampler = asyncio.create_task(self._sample_gauges(stop), name="dispatcher-gauges")
        passes = 0
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    dispatched, published = await self.run_once()
                    passes += 1
                    if passes % 60 == 0:
                        await self.prune_idempotency_keys()
                except Exception:
                    log.exception("dispatch_pass_failed")
                    dispatched = published = 0
                if dispatched >= self._batch_size or published >= self._batch_size:
                    continue  # more is waiting
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval_s):
                        await _first(self._wake.wait(), stop.wait())
        finally:
            for task in (listener, sampler):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def run_once(self) -> tuple[int, int]:
        """One pass: plan due notifications, then publish due deliveries. Returns (planned, published)."""
        return await self.dispatch_due(), await self.publish_due()

    async def dispatch_due(self) -> int:
        """Write the deliveries of up to a batch of due notifications; returns how many were dispatched."""
        now = self._clock()
        async with self._sessions.begin() as session:
            query = (
                select(m.NotificationRow)
                .where(m.NotificationRow.status.in_(m.PENDING_STATUSES), m.NotificationRow.send_at <= now)
                .order_by(m.NotificationRow.send_at)
                .limit(self._batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = list((await session.execute(query)).scalars())
            if not rows:
                return 0
            limit = asyncio.Semaphore(_PLAN_CONCURRENCY)

            async def plan(row: m.NotificationRow) -> _Plan | None:
                async with limit:
                    with tracer().start_as_current_span(
                        "dispatch notification",
                        context=from_traceparent(row.trace_parent),
                        attributes={"clarion.notification_id": str(row.id)},
                    ):
                        try:
                            return await self._plan(row, now)
                        except _Later:
                            return None

            plans = await asyncio.gather(*(plan(row) for row in rows))
            dispatched = 0
            skipped: list[tuple[str, str]] = []
            for row, planned in zip(rows, plans, strict=True):
                if planned is None:
                    continue
                if planned.deliveries:
                    await session.execute(
                        insert(m.DeliveryRow)
                        .values(planned.deliveries)
                        .on_conflict_do_nothing(index_elements=[m.DeliveryRow.notification_id, m.DeliveryRow.channel])
                    )
                row.status_reason = planned.reason
                row.status = derive_status([d["status"] for d in planned.deliveries], reason=planned.reason)
                row.updated_at = now
                dispatched += 1
                skipped += [(d["channel"], d["status_reason"]) for d in planned.deliveries if d["status"] == m.SKIPPED]
                log.info(
                    "notification_dispatched",
                    notification_id=str(row.id),
                    status=row.status,
                    reason=planned.reason or None,
                )
        # Counted once committed. The reasons are a closed set (_channel_plan), never user data.
        for channel, reason in skipped:
            DELIVERIES_SKIPPED.labels(channel=channel, reason=reason).inc()
        return dispatched

    async def _plan(self, row: m.NotificationRow, now: datetime) -> _Plan:
        try:
            user = await self._clients.get_user(row.user_id)
        except NotFound:
            return _Plan(reason="user_not_found")
        except Unavailable as exc:
            log.warning("dispatch_deferred", notification_id=str(row.id), why=exc.message)
            raise _Later from None
        try:
            rendered = await self._clients.render(
                template_key=row.template_key,
                version=row.template_version,
                locale=row.locale or user.preferred_language,
                data=row.message_data,
            )
        except FailedPrecondition:
            return _Plan(reason="template_deleted")
        except NotFound:
            return _Plan(reason="template_not_found")
        except InvalidArgument as exc:
            return _Plan(reason=f"render_failed: {exc.message}")
        except Unavailable as exc:
            log.warning("dispatch_deferred", notification_id=str(row.id), why=exc.message)
            raise _Later from None
        channels = list(row.channels) or [c for c in ("email", "push") if rendered.HasField(c)]
        critical = row.priority == notifications_pb2.PRIORITY_CRITICAL
        plan = _Plan()
        for channel in channels:
            status, reason, due, payload = _channel_plan(
                channel, user=user, rendered=rendered, critical=critical, now=now
            )
            plan.deliveries.append(
                {
                    "notification_id": row.id,
                    "channel": channel,
                    "status": status,
                    "status_reason": reason,
                    "payload": payload,
                    "due_at": due,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        return plan

    async def publish_due(self) -> int:
        """Publish up to a batch of committed, due, unpublished deliveries; returns how many were published."""
        now = self._clock()
        async with self._sessions.begin() as session:
            query = (
                select(m.DeliveryRow)
                .where(
                    m.DeliveryRow.status == m.QUEUED, m.DeliveryRow.published_at.is_(None), m.DeliveryRow.due_at <= now
                )
                .order_by(m.DeliveryRow.due_at)
                .limit(self._batch_size)
                .with_for_update(skip_locked=True)
            )
            deliveries = list((await session.execute(query)).scalars())
            if not deliveries:
                return 0
            traces = {
                notification_id: (request_id, traceparent)
                for notification_id, request_id, traceparent in (
                    await session.execute(
                        select(
                            m.NotificationRow.id, m.NotificationRow.trace_request_id, m.NotificationRow.trace_parent
                        ).where(m.NotificationRow.id.in_({d.notification_id for d in deliveries}))
                    )
                ).all()
            }
            results = await asyncio.gather(
                *(self._publish(d, *traces.get(d.notification_id, ("", ""))) for d in deliveries),
                return_exceptions=True,
            )
            done = [d for d, result in zip(deliveries, results, strict=True) if result is None]
            published = [d.id for d in done]
            failures = [r for r in results if isinstance(r, BaseException)]
            if published:
                await session.execute(
                    update(m.DeliveryRow)
                    .where(m.DeliveryRow.id.in_(published))
                    .values(published_at=now, status_reason="", updated_at=now)
                )
            if failures:
                # Left unpublished: the next pass tries again (a broker outage is the usual reason).
                log.warning(
                    "publish_failed",
                    failed=len(failures),
                    published=len(published),
                    error=str(failures[0]) if isinstance(failures[0], BrokerUnavailable) else repr(failures[0]),
                )
        for delivery in done:
            DELIVERIES_PUBLISHED.labels(channel=delivery.channel).inc()
        return len(published)

    async def sample_gauges(self) -> None:
        """Set the gauges that need a query: dispatcher lag, dead letters pending, the broker's queue depths."""
        now = self._clock()
        async with self._sessions() as session:
            oldest = (
                await session.execute(
                    select(func.min(m.DeliveryRow.due_at)).where(
                        m.DeliveryRow.status == m.QUEUED,
                        m.DeliveryRow.published_at.is_(None),
                        m.DeliveryRow.due_at <= now,
                    )
                )
            ).scalar_one()
            dead = (await session.execute(select(func.count()).where(m.DeliveryRow.status == m.FAILED))).scalar_one()
        DISPATCHER_LAG.set(max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
        DEAD_LETTERS.set(dead)
        for queue in (*QUEUES.values(), FAILED_QUEUE):
            # Not connected, or not declared yet: the last sample stands until the next one.
            with contextlib.suppress(BrokerError):
                QUEUE_MESSAGES.labels(queue=queue).set(await self._broker.queue_depth(queue))

    async def _sample_gauges(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sample_gauges()
            except Exception as exc:  # noqa: BLE001 - a failed sample must not stop the next one
                log.warning("dispatch_gauges_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GAUGE_INTERVAL_S):
                    await stop.wait()

    async def _publish(self, delivery: m.DeliveryRow, request_id: str, traceparent: str) -> None:
        with tracer().start_as_current_span(
            f"publish {delivery.channel}",
            context=from_traceparent(traceparent),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": QUEUES[delivery.channel],
                "clarion.delivery_id": str(delivery.id),
            },
        ):
            await self._publish_message(delivery, request_id)

    async def _publish_message(self, delivery: m.DeliveryRow, request_id: str) -> None:
        body = {
            "delivery_id": str(delivery.id),
            "notification_id": str(delivery.notification_id),
            "channel": delivery.channel,
            "payload": delivery.payload,
        }
        message = Message(
            message_id=str(delivery.id),
            body=json.dumps(body, separators=(",", ":")).encode(),
            # traceparent: the workers' spans continue this one.
            headers=inject(
                {
                    "notification_id": str(delivery.notification_id),
                    **({"request_id": request_id} if request_id else {}),
                }
            ),
        )
        await self._broker.publish(QUEUES[delivery.channel], message)

    async def prune_idempotency_keys(self) -> int:
        """Delete expired idempotency keys (a batch at a time)."""
        async with self._sessions.begin() as session:
            pruned = await NotificationRepository(session).prune_keys()
        if pruned:
            log.info("idempotency_keys_pruned", count=pruned)
        return pruned

    async def _listen(self, stop: asyncio.Event) -> None:
        """LISTEN for new work; on any connection failure, reconnect after a pause (the poll covers the gap)."""
        while not stop.is_set():
            try:
                connection = await asyncpg.connect(self._dsn, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("dispatch_listen_unavailable", error=type(exc).__name__)
                await asyncio.sleep(self._poll_interval_s * 5)
                continue
            try:
                closed = asyncio.Event()
                connection.add_termination_listener(lambda _connection, closed=closed: closed.set())
                await connection.add_listener(DISPATCH_CHANNEL, lambda *_: self._wake.set())
                await _first(stop.wait(), closed.wait())
            finally:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=2)


async def _first(*waits: Any) -> None:
    """Wait until the first of several awaitables finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
