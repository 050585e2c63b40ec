"""The channel workers: consume a work queue, claim each delivery, call the provider, record the outcome, then
settle the message — ack, retry through a tier, or dead-letter — only after the outcome is committed."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from opentelemetry.trace import SpanKind, Status, StatusCode

from clarion.core.batching import GroupCommit
from clarion.core.broker import Broker, Received, retry_tier_s
from clarion.core.db import FastPath, is_database_unavailable
from clarion.core.logging import get_logger, redact_text
from clarion.core.metrics import ATTEMPT_SECONDS, DEAD_LETTERED, DELIVERIES, TIME_TO_SEND
from clarion.core.tracing import extract, tracer
from clarion.delivery.breaker import ProviderBreaker
from clarion.delivery.channels import CHANNELS
from clarion.delivery.failover import Providers
from clarion.delivery.lifecycle import AttemptOutcome, DeliveryStatus, settle
from clarion.delivery.providers.base import (
    OutcomeUnknown,
    PermanentFailure,
    ProviderError,
    TransientFailure,
)
from clarion.delivery.store import Attempt, Claimed, Outcome, claim_many, finish_many
from clarion.delivery.tasks import UnreadableTask, read_task
from clarion.notifications.clients import ServiceClients

log = get_logger(__name__)
T = TypeVar("T")

# Backoff between attempts: exponential, jittered, capped. Written here rather than with a retry library because
# the waiting happens in RabbitMQ's retry tiers, across processes, not in a loop of ours.
BACKOFF_CAP_S = 3600.0
# While PostgreSQL is away a handler keeps its message (unacked) and asks again after a pause that doubles up to the
# cap. A message requeued instead would spend RabbitMQ's delivery limit in under a second and be dead-lettered
# without the database knowing; held, the prefetch bounds what the worker takes meanwhile, so it stops consuming.
DATABASE_RETRY_FIRST_S = 0.2
DATABASE_RETRY_CAP_S = 5.0


def backoff_s(attempt: int, retry_after_s: float | None, *, base_s: float = 2.0) -> float:
    """How long to wait before attempt `attempt + 1`; never less than the provider's Retry-After."""
    ceiling = min(BACKOFF_CAP_S, base_s * 2 ** (attempt - 1))
    delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
    return max(delay, retry_after_s or 0.0)


class DeliveryWorker:
    """Handles one channel's work queue: claims each message's delivery, has the channel (clarion.delivery.channels)
    send it with `provider`, records the outcome and settles the message. Also the channel's `Sending`: every
    provider call goes through `call`."""

    def __init__(
        self,
        *,
        channel: str,
        fast: FastPath,
        provider: Any = None,
        clients: ServiceClients | None = None,
        max_attempts: int = 5,
        lease_s: float = 60.0,
        backoff_base_s: float = 2.0,
        breaker: ProviderBreaker | None = None,
        providers: Providers | None = None,
    ) -> None:
        """`providers`, the channel's providers in order with their breakers; or one `provider` (with `breaker`)."""
        self.channel = channel
        self._channel = CHANNELS[channel]
        self._fast = fast
        # The handlers of the messages in flight (up to the prefetch) share their claims and their outcomes'
        # transactions: a few statements per batch instead of two transactions per message.
        self._claims: GroupCommit[uuid.UUID, Claimed | None] = GroupCommit(self._claim_batch)
        self._outcomes: GroupCommit[Outcome, Exception | bool] = GroupCommit(self._finish_batch)
        if providers is None:
            routes = [(provider, breaker or ProviderBreaker(threshold=5, reset_s=30.0))] if provider is not None else []
            providers = Providers(routes)
        self._providers = providers
        self._clients = clients
        self._max_attempts = max_attempts
        self._lease_s = lease_s
        self._backoff_base_s = backoff_base_s
        # Handlers waiting for PostgreSQL to answer; the first one to wait logs the outage, the last one its end.
        self._waiting_for_database = 0

    async def _claim_batch(self, delivery_ids: list[uuid.UUID]) -> list[Claimed | None]:
        async with self._fast.connection() as connection:
            return await claim_many(connection, delivery_ids, lease_s=self._lease_s)

    async def _finish_batch(self, outcomes: list[Outcome]) -> list[Exception | bool]:
        """One transaction for the batch; if it fails for a reason other than the database being gone (a deadlock
        with a replay, a value PostgreSQL refuses), each outcome is tried alone, so one bad outcome does not send
        every message of its batch back to the queue (and their deliveries out again, as duplicates)."""
        try:
            async with self._fast.connection() as connection:
                settled = await finish_many(connection, outcomes)
            return [o.claimed.delivery_id in settled for o in outcomes]
        except Exception as exc:
            if len(outcomes) == 1 or is_database_unavailable(exc):
                raise
            log.warning("outcome_batch_failed", outcomes=len(outcomes), error=type(exc).__name__)
        results: list[Exception | bool] = []
        for outcome in outcomes:
            try:
                async with self._fast.connection() as connection:
                    results.append(bool(await finish_many(connection, [outcome])))
            except Exception as exc:  # noqa: BLE001 - raised to this outcome's handler
                results.append(exc)
        return results

    async def _finish(self, outcome: Outcome) -> bool:
        """Commit an outcome (with the others in flight), waiting for PostgreSQL if it is away; raises if it was
        refused. False when the delivery was claimed again meanwhile (the lease expired): only its attempts were
        logged, and its message must not be retried or dead-lettered."""
        result = await self._while_database_away(lambda: self._outcomes.submit(outcome))
        if isinstance(result, Exception):
            raise result
        if result:
            return True
        log.warning("delivery_outcome_late", delivery_id=str(outcome.claimed.delivery_id), status=outcome.status)
        return False

    async def _while_database_away(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, again and again while it fails only because PostgreSQL cannot be reached."""
        pause_s = DATABASE_RETRY_FIRST_S
        waiting = answered = False
        try:
            while True:
                try:
                    result = await call()
                    answered = True
                    return result
                except Exception as exc:
                    if not is_database_unavailable(exc):
                        raise
                    if not waiting:
                        waiting = True
                        self._waiting_for_database += 1
                        if self._waiting_for_database == 1:
                            log.warning("database_unavailable_holding_messages", error=type(exc).__name__)
                await asyncio.sleep(random.uniform(pause_s / 2, pause_s))  # noqa: S311 - jitter
                pause_s = min(pause_s * 2, DATABASE_RETRY_CAP_S)
        finally:
            if waiting:
                self._waiting_for_database -= 1
                if self._waiting_for_database == 0 and answered:
                    log.warning("database_available_again")

    @property
    def _provider_names(self) -> str:
        """The channel's providers, for the metrics of what none of them was asked: "sendgrid,smtp"."""
        return ",".join(self._providers.names)

    async def start(self, broker: Broker, queue: str, *, prefetch: int) -> None:
        """Begin consuming `queue`."""
        await broker.consume(queue, self.handle, prefetch=prefetch)

    async def handle(self, received: Received) -> None:
        """One message: claim, send, record, settle — in a span continuing the dispatcher's (its traceparent)."""
        with tracer().start_as_current_span(
            f"deliver {self.channel}",
            context=extract(received.message.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": received.queue,
                "messaging.message.id": received.message.message_id,
                "clarion.delivery_count": received.delivery_count,
            },
        ):
            await self._handle(received)

    async def _handle(self, received: Received) -> None:
        try:
            delivery_id = uuid.UUID(read_task(received.message).delivery_id)
        except UnreadableTask:
            log.error("delivery_message_unreadable", message_id=received.message.message_id)
            await received.dead_letter("unreadable_message")
            return
        provider = self._providers.choose()
        if provider is None and self._providers:
            # Every provider is failing: park the message without claiming it, so no attempt is spent.
            wait_s = self._providers.wait_s()
            DELIVERIES.labels(channel=self.channel, provider=self._provider_names, outcome="deferred").inc()
            log.info("provider_circuit_open", delivery_id=str(delivery_id), retry_in_s=round(wait_s, 1))
            await received.retry(wait_s)
            return
        try:
            await self._deliver(delivery_id, received, provider)
        finally:
            # A trial call admitted for a delivery that was then not sent (already handled, no attempt left, the
            # database gone) frees its slot; one that was sent has been counted already.
            if provider is not None:
                self._providers.release(provider)

    async def _deliver(self, delivery_id: uuid.UUID, received: Received, provider: Any) -> None:
        claimed = await self._while_database_away(lambda: self._claims.submit(delivery_id))
        if claimed is None:
            log.info("delivery_already_handled", delivery_id=str(delivery_id))
            await received.ack()
            return
        if claimed.attempt > self._max_attempts:
            # Claimed again after the last allowed attempt's lease expired (its outcome unknown): no more sends.
            exhausted = TransientFailure(f"no attempt left after attempt {claimed.attempt - 1} (outcome unknown)")
            partial = self._channel.partially_sent(claimed.payload)
            name = str(provider.name) if provider is not None else ""
            await self._settle(claimed, received, [], exhausted, provider=name, message_id="", partial_success=partial)
        else:
            if provider is None:
                raise RuntimeError(f"the {self.channel} worker has no provider")
            sent = await self._channel.send(provider, claimed, self)
            await self._settle(
                claimed,
                received,
                sent.attempts,
                sent.error,
                provider=provider.name,
                message_id=sent.message_id,
                payload=sent.payload,
                partial_success=sent.partial_success,
            )

    async def call(self, provider: str, send: Awaitable[str]) -> tuple[Attempt, str, ProviderError | None]:
        """One provider call, counted by the breaker: only transient failures say the provider is unwell."""
        with tracer().start_as_current_span(
            f"{provider} send",
            kind=SpanKind.CLIENT,
            attributes={"clarion.provider": provider, "clarion.channel": self.channel},
        ) as span:
            attempt, message_id, error = await _attempt(provider, send)
            span.set_attribute("clarion.outcome", attempt.outcome)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, attempt.error[:200]))
        ATTEMPT_SECONDS.labels(channel=self.channel, provider=provider).observe(attempt.duration_ms / 1000)
        breaker = self._providers.breaker(provider)
        if breaker is not None:
            if isinstance(error, TransientFailure):
                breaker.record_failure()
            else:
                breaker.record_success()
        return attempt, message_id, error

    async def forget_device(self, user_id: str, device_id: str) -> None:
        """An unregistered token is removed from the user, so nobody sends to it again."""
        if self._clients is None:
            return
        try:
            await self._clients.remove_device(user_id, device_id)
            log.info("device_removed_unregistered", user_id=user_id, device_id=device_id)
        except Exception:  # noqa: BLE001 - the push outcome matters more; the next failure will try again
            log.warning("device_remove_failed", user_id=user_id, device_id=device_id)

    async def _settle(
        self,
        claimed: Claimed,
        received: Received,
        attempts: list[Attempt],
        error: ProviderError | None,
        *,
        provider: str,
        message_id: str,
        payload: dict[str, Any] | None = None,
        partial_success: bool = False,
    ) -> None:
        delivery = str(claimed.delivery_id)
        if error is None:
            outcome = Outcome(
                claimed,
                attempts,
                DeliveryStatus.SENT,
                provider=provider,
                provider_message_id=message_id,
                payload=payload,
            )
            if await self._finish(outcome):
                self._count(claimed, provider, DeliveryStatus.SENT)
                log.info("delivery_sent", delivery_id=delivery, provider=provider, attempt=claimed.attempt)
            await received.ack()
            return
        reason = redact_text(str(error))
        status = settle(
            outcome_of(error), attempt=claimed.attempt, max_attempts=self._max_attempts, partial_success=partial_success
        )
        if status is DeliveryStatus.RETRYING:
            retry_after_s = error.retry_after_s if isinstance(error, TransientFailure) else None
            delay_s = backoff_s(claimed.attempt, retry_after_s, base_s=self._backoff_base_s)
            retry_at = datetime.now(UTC) + timedelta(seconds=retry_tier_s(delay_s))
            outcome = Outcome(
                claimed,
                attempts,
                DeliveryStatus.RETRYING,
                reason=reason,
                provider=provider,
                payload=payload,
                retry_at=retry_at,
            )
            if not await self._finish(outcome):
                await received.ack()  # another claim owns the delivery now
                return
            self._count(claimed, provider, "retry")
            log.info("delivery_retrying", delivery_id=delivery, attempt=claimed.attempt, delay_s=round(delay_s, 1))
            await received.retry(delay_s)
            return
        final = status  # FAILED, or SENT when some of its messages went out (a push to several devices)
        why = reason if isinstance(error, PermanentFailure) else f"attempts exhausted: {reason}"
        outcome = Outcome(
            claimed, attempts, final, reason=why, provider=provider, provider_message_id=message_id, payload=payload
        )
        if not await self._finish(outcome):
            await received.ack()
            return
        self._count(claimed, provider, final)
        log.warning("delivery_failed", delivery_id=delivery, attempt=claimed.attempt, reason=why)
        if final == DeliveryStatus.FAILED:
            await received.dead_letter(why[:200])
        else:
            await received.ack()

    def _count(self, claimed: Claimed, provider: str, outcome: str) -> None:
        """Count a committed outcome: sent (with its time since acceptance), retry, or failed (a dead letter)."""
        DELIVERIES.labels(channel=claimed.channel, provider=provider, outcome=outcome).inc()
        if outcome == DeliveryStatus.SENT:
            elapsed_s = (datetime.now(UTC) - claimed.accepted_at).total_seconds()
            TIME_TO_SEND.labels(channel=claimed.channel, provider=provider).observe(max(0.0, elapsed_s))
        elif outcome == DeliveryStatus.FAILED:
            DEAD_LETTERED.labels(channel=claimed.channel, provider=provider).inc()


def outcome_of(error: ProviderError | None) -> AttemptOutcome:
    """What a provider call came to, by the error it raised (None: it succeeded)."""
    if error is None:
        return AttemptOutcome.SUCCEEDED
    if isinstance(error, OutcomeUnknown):
        return AttemptOutcome.UNKNOWN
    if isinstance(error, TransientFailure):
        return AttemptOutcome.TRANSIENT_FAILURE
    return AttemptOutcome.PERMANENT_FAILURE


async def _attempt(provider: str, call: Awaitable[str]) -> tuple[Attempt, str, ProviderError | None]:
    """Run one provider call and describe it for the attempt log."""
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    message_id = ""
    error: ProviderError | None = None
    try:
        message_id = await call
    # The three kinds a provider raises; anything else is a bug, and propagates as it always did.
    except (TransientFailure, PermanentFailure) as exc:
        error = exc
    duration_ms = (time.perf_counter() - started) * 1000
    text = redact_text(str(error)) if error else ""
    return Attempt(provider, outcome_of(error), text, started_at, duration_ms), message_id, error
