"""The dispatcher is the relay of the deliveries outbox: a notification's deliveries are planned and written when it
is accepted (clarion.delivery.planning), and a pass publishes the due ones and marks them published. A deferred
delivery (quiet hours, a scheduled send) is checked again when it falls due, before it is published.

The deliveries table is an outbox (docs/message-flow.md). A pass claims rows with `FOR UPDATE SKIP LOCKED` in short
transactions, so several dispatchers can run at once; anything committed but not yet published (a crash, a broker
outage, quiet hours that just ended) goes out on a later pass. LISTEN/NOTIFY wakes it; a poll interval backs that up.
Every LEGACY_EVERY passes it also plans notifications an earlier release accepted without deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from opentelemetry.trace import SpanKind

from clarion.core.broker import Broker, BrokerError, BrokerUnavailable
from clarion.core.db import FastPath, asyncpg_dsn, is_database_unavailable
from clarion.core.errors import ClarionError, FailedPrecondition, NotFound, Unavailable
from clarion.core.logging import get_logger
from clarion.core.metrics import (
    DEAD_LETTERS,
    DELIVERIES_PUBLISHED,
    DELIVERIES_SKIPPED,
    DISPATCHER_LAG,
    QUEUE_MESSAGES,
)
from clarion.core.tracing import from_traceparent, inject, tracer
from clarion.delivery import planning, store
from clarion.delivery.lifecycle import DeliveryStatus, derive_notification_status
from clarion.delivery.queues import CHANNEL_QUEUES, FAILED_QUEUE
from clarion.delivery.tasks import task_message
from clarion.notifications.clients import ServiceClients, render_request
from clarion.suppressions import store as suppressions
from clarion.v1 import users_pb2

log = get_logger(__name__)

# How often the dispatcher samples the gauges that need a query (lag, dead letters, queue depths): often enough for
# alerts, rare enough to cost nothing next to a pass.
GAUGE_INTERVAL_S = 5.0


# Notifications accepted by a release that did not plan deliveries are looked for on the first pass and then every
# this many passes: they only exist across an upgrade, and the look costs a scan of the in-flight notifications.
LEGACY_EVERY = 30


@dataclass
class _Plan:
    """A legacy notification's deliveries, or why it can have none."""

    deliveries: list[store.NewDelivery] = field(default_factory=list)
    reason: str = ""  # set when there can be no deliveries at all


class Dispatcher:
    """Plans due notifications into deliveries and publishes due deliveries to the broker."""

    def __init__(
        self,
        *,
        fast: FastPath,
        clients: ServiceClients,
        broker: Broker,
        database_url: str,
        batch_size: int = 100,
        poll_interval_s: float = 1.0,
        task_format: str = "protobuf",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._fast = fast
        self._clients = clients
        self._broker = broker
        self._dsn = asyncpg_dsn(database_url)
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._task_format = task_format
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
                    dispatched, published = await self.run_once(legacy=passes % LEGACY_EVERY == 0)
                    passes += 1
                    if passes % 60 == 0:
                        await self.prune_idempotency_keys()
                except Exception as exc:
                    if is_database_unavailable(exc):  # expected while PostgreSQL is away: no stack trace per pass
                        log.warning("dispatch_database_unavailable", error=type(exc).__name__)
                    else:
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

    async def run_once(self, *, legacy: bool = True) -> tuple[int, int]:
        """One pass: plan due notifications of an earlier release (when `legacy`), check deferred deliveries that
        fell due, publish due deliveries. Returns (planned or checked, published)."""
        planned = await self.dispatch_due() if legacy else 0
        return planned + await self.recheck_deferred(), await self.publish_due()

    async def recheck_deferred(self) -> int:
        """Check up to a batch of deferred deliveries that fell due against their users as they are now
        (clarion.delivery.planning.recheck); returns how many. When UserService does not answer they wait for a
        later pass."""
        now = self._clock()
        async with self._fast.connection() as connection:
            due = await store.deferred_due(connection, now, self._batch_size)
        if not due:
            return 0
        # No database connection held while UserService answers; record_rechecks changes only rows still as read.
        try:
            users = await self._clients.get_users([d.user_id for d in due])
        except Unavailable as exc:
            log.warning("recheck_deferred", deliveries=len(due), why=exc.message)
            return 0
        suppressed = await self._suppressed(due, users)
        rechecked = [
            planning.recheck(
                deferred, users.get(deferred.user_id), now=now, suppressed=suppressed.get(deferred.project_id)
            )
            for deferred in due
        ]
        async with self._fast.connection() as connection:
            await store.record_rechecks(connection, rechecked, now)
        for r in rechecked:
            if r.status == DeliveryStatus.SKIPPED:
                DELIVERIES_SKIPPED.labels(channel=r.deferred.channel, reason=r.reason).inc()
        return len(rechecked)

    async def _suppressed(
        self, due: list[store.Deferred], users: Mapping[str, users_pb2.User]
    ) -> dict[str, Mapping[tuple[str, str], str]]:
        """Each project's suppressions among the addresses of its deferred deliveries' users (a query per project
        in the batch; none without addresses)."""
        wanted: dict[str, set[tuple[str, str]]] = {}
        for deferred in due:
            if (user := users.get(deferred.user_id)) is not None:
                wanted.setdefault(deferred.project_id, set()).update(planning.recipients(user))
        found: dict[str, Mapping[tuple[str, str], str]] = {}
        async with self._fast.connection() as connection:
            for project, recipients in wanted.items():
                if recipients:
                    found[project] = await suppressions.suppressed(connection, project, recipients)
        return found

    async def dispatch_due(self) -> int:
        """Plan and write the deliveries of up to a batch of due notifications an earlier release accepted without
        deliveries; returns how many were dispatched."""
        now = self._clock()
        async with self._fast.connection() as connection, connection.transaction():
            due = await store.claim_due(connection, now, self._batch_size)
            if not due:
                return 0
            plans = await self._plan_batch(due, now)
            planned = [(n, plan) for n, plan in zip(due, plans, strict=True) if plan is not None]
            deliveries = [d for _, plan in planned for d in plan.deliveries]
            await store.record_dispatch(
                connection,
                deliveries,
                [
                    (
                        n.id,
                        derive_notification_status([d.status for d in plan.deliveries], reason=plan.reason),
                        plan.reason,
                    )
                    for n, plan in planned
                ],
                now,
            )
        for notification, plan in planned:
            log.info("notification_dispatched", notification_id=str(notification.id), reason=plan.reason or None)
        planning.count_skipped(deliveries)  # once committed
        return len(planned)

    async def _plan_batch(self, due: list[store.DueNotification], now: datetime) -> list[_Plan | None]:
        """Each notification's deliveries, from one BatchGetUsers and one BatchRenderTemplates for the batch; None
        for all of them when a service is unavailable (a later pass tries again)."""
        try:
            users = await self._clients.get_users([n.user_id for n in due])
            wanted = [n for n in due if n.user_id in users]
            renders = await self._clients.render_many(
                [
                    render_request(
                        template_key=n.template_key,
                        version=n.template_version,
                        locale=n.locale or users[n.user_id].preferred_language,
                        data=n.message_data,
                    )
                    for n in wanted
                ]
            )
        except Unavailable as exc:
            log.warning("dispatch_deferred", notifications=len(due), why=exc.message)
            return [None] * len(due)
        rendered = dict(zip((n.id for n in wanted), renders, strict=True))
        plans: list[_Plan | None] = []
        for notification in due:
            with tracer().start_as_current_span(
                "dispatch notification",
                context=from_traceparent(notification.trace_parent),
                attributes={"clarion.notification_id": str(notification.id)},
            ):
                user = users.get(notification.user_id)
                result = rendered.get(notification.id)
                if user is None or result is None:
                    plans.append(_Plan(reason="user_not_found"))
                elif isinstance(result, Unavailable):
                    plans.append(None)  # this one could not be rendered now: a later pass tries again
                elif isinstance(result, FailedPrecondition):
                    plans.append(_Plan(reason="template_deleted"))
                elif isinstance(result, NotFound):
                    plans.append(_Plan(reason="template_not_found"))
                elif isinstance(result, ClarionError):
                    plans.append(_Plan(reason=f"render_failed: {result.message}"))
                else:
                    deliveries = planning.plan(
                        notification.id,
                        channels=notification.channels,
                        user=user,
                        rendered=result,
                        priority=notification.priority,
                        send_at=now,
                        now=now,
                    )
                    plans.append(_Plan(deliveries))
        return plans

    async def publish_due(self) -> int:
        """Publish up to a batch of committed, due, unpublished deliveries; returns how many were published."""
        now = self._clock()
        async with self._fast.connection() as connection, connection.transaction():
            deliveries = await store.claim_unpublished(connection, now, self._batch_size)
            if not deliveries:
                return 0
            results = await asyncio.gather(*(self._publish(d) for d in deliveries), return_exceptions=True)
            done = [d for d, result in zip(deliveries, results, strict=True) if result is None]
            failures = [r for r in results if isinstance(r, BaseException)]
            if done:
                await store.set_published(connection, [d.id for d in done], now)
            if failures:
                # Left unpublished: the next pass tries again (a broker outage is the usual reason).
                log.warning(
                    "publish_failed",
                    failed=len(failures),
                    published=len(done),
                    error=str(failures[0]) if isinstance(failures[0], BrokerUnavailable) else repr(failures[0]),
                )
        for delivery in done:
            DELIVERIES_PUBLISHED.labels(channel=delivery.channel).inc()
        return len(done)

    async def sample_gauges(self) -> None:
        """Set the gauges that need a query: dispatcher lag, dead letters pending, the broker's queue depths."""
        now = self._clock()
        async with self._fast.connection() as connection:
            oldest, dead = await store.relay_backlog(connection, now)
        DISPATCHER_LAG.set(max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
        DEAD_LETTERS.set(dead)
        for queue in (*CHANNEL_QUEUES.values(), FAILED_QUEUE):
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

    async def _publish(self, delivery: store.Unpublished) -> None:
        channel, delivery_id = delivery.channel, str(delivery.id)
        with tracer().start_as_current_span(
            f"publish {channel}",
            context=from_traceparent(delivery.trace_parent),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": CHANNEL_QUEUES[channel],
                "clarion.delivery_id": delivery_id,
            },
        ):
            notification_id, request_id = str(delivery.notification_id), delivery.trace_request_id
            headers = {"notification_id": notification_id, **({"request_id": request_id} if request_id else {})}
            message = task_message(
                delivery_id=delivery_id,
                notification_id=notification_id,
                user_id=delivery.user_id,
                channel=channel,
                payload=delivery.payload,
                format=self._task_format,
                # traceparent: the workers' spans continue this one.
                headers=inject(headers),
            )
            await self._broker.publish(CHANNEL_QUEUES[channel], message)

    async def prune_idempotency_keys(self) -> int:
        """Delete expired idempotency keys (a batch at a time)."""
        async with self._fast.connection() as connection:
            pruned = await store.prune_keys(connection)
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
                await connection.add_listener(store.DISPATCH_CHANNEL, lambda *_: self._wake.set())
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
