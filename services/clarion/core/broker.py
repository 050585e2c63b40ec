"""The message broker between the dispatcher and the channel workers: one interface, two implementations.

`RabbitMQBroker` (clarion.core.broker_rabbitmq) is the real thing; `InMemoryBroker` (clarion.core.broker_memory) is
local mode's in-process stand-in with the same observable semantics and no durability. Both pass the same contract
tests (tests/integration/core/test_broker.py). Pick one with `create_broker(settings.broker_url)`.

This module is transport only: which queues exist is the caller's `Topology` (the delivery core's is
clarion.delivery.queues). Queues, by logical name (a `namespace` prefixes every real name, so tests can isolate
themselves):
- the work queues: a handler settles each message it is given exactly once: `ack`, `retry(delay_s)` (through a
  fixed-TTL retry tier back to the same work queue), `dead_letter(reason)` (to the dead-letter queue) or `requeue`
  (on shutdown). A handler that raises has its message requeued; a message requeued more than `delivery_limit` times
  (a poison message) goes to the dead-letter queue with reason `delivery_limit`.
- `retry.<queue>.<tier>s`, one per work queue and tier in RETRY_TIERS_S: messages wait there, unconsumed.
- the dead-letter queue: each message with the `x-clarion-reason` and `x-clarion-source-queue` headers. To replay
  one, consume it, `publish` it to its source queue, then `ack` it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog

from clarion.core.logging import get_logger

if TYPE_CHECKING:
    from clarion.core.broker_memory import InMemoryBroker
    from clarion.core.broker_rabbitmq import RabbitMQBroker

log = get_logger(__name__)

__all__ = [
    "DELIVERY_LIMIT_REASON",
    "REASON_HEADER",
    "RETRY_TIERS_S",
    "SOURCE_QUEUE_HEADER",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "Handler",
    "InMemoryBroker",
    "Message",
    "RabbitMQBroker",
    "Received",
    "Topology",
    "Unroutable",
    "create_broker",
    "retry_tier_s",
]

# Fixed delays of the retry queues (one queue per work queue and tier): RabbitMQ expires a per-message TTL only at the
# head of a queue, so a queue mixing delays would hold a short one behind a long one. A retry asks for a delay and
# waits the smallest tier at least that long, or the largest.
RETRY_TIERS_S: tuple[float, ...] = (1, 5, 30, 120, 600, 3600)
# Requeued (by a raising handler, or `requeue`) more than this many times in a row, a message is dead-lettered.
DEFAULT_DELIVERY_LIMIT = 20

# Headers on a message in the dead-letter queue: why it is there, and the work queue (logical name) it came from.
REASON_HEADER = "x-clarion-reason"
SOURCE_QUEUE_HEADER = "x-clarion-source-queue"
# The reason of a poison message, dead-lettered by the broker after `delivery_limit` requeues.
DELIVERY_LIMIT_REASON = "delivery_limit"
# Deliveries before a retry, carried on the copy (RabbitMQ's own x-delivery-count starts again in each queue).
DELIVERY_COUNT_HEADER = "x-clarion-delivery-count"
# Headers the brokers set for themselves: a handler never sees them and a publisher may not set them.
_BROKER_HEADERS = frozenset({"x-death", "x-delivery-count", DELIVERY_COUNT_HEADER})
_BROKER_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")
# Reasons are for people reading dead letters; a bound keeps a stack trace from bloating every dead letter.
MAX_REASON_CHARS = 1000


class BrokerError(Exception):
    """The broker refused an operation (e.g. its topology does not match ours, or a message was settled twice)."""


class BrokerUnavailable(BrokerError):
    """The broker is unreachable, or a publish timed out or was not confirmed: the message may not be queued."""


class Unroutable(BrokerUnavailable):
    """The broker returned a published message because no queue was bound for it (topology deleted under us).

    A subclass of BrokerUnavailable: for a publisher it is the same outcome (not queued, try again later), and the
    topology is declared again on the next connect.
    """


@dataclass(frozen=True, slots=True)
class Message:
    """A delivery on its way to a channel worker. Never put credentials (API keys, provider keys) in it; the body
    carries what a worker needs to send, a user's push tokens included, so the broker is as private as the
    database."""

    message_id: str
    """The delivery id: stable across redeliveries and retries, so workers deduplicate by it."""
    body: bytes
    """The caller's bytes, in `content_type`."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """E.g. `request_id`, `notification_id`; on the dead-letter queue also REASON_HEADER and SOURCE_QUEUE_HEADER."""
    content_type: str = "application/json"
    """The body's media type, carried as the AMQP content type."""


class Received(Protocol):
    """A message handed to a consumer's handler, which settles it exactly once with one of the four methods."""

    @property
    def message(self) -> Message:
        """The message as published (broker-internal headers removed)."""
        ...

    @property
    def queue(self) -> str:
        """The logical name of the queue it came from (`email.queue`), without the namespace."""
        ...

    @property
    def redelivered(self) -> bool:
        """True when it was delivered before from this queue and returned unsettled (not after a retry)."""
        ...

    @property
    def delivery_count(self) -> int:
        """How many times this message was delivered before, retries included; 0 the first time."""
        ...

    async def ack(self) -> None:
        """Done with it: remove it from the queue."""
        ...

    async def retry(self, delay_s: float) -> None:
        """Deliver it again on the same queue after `retry_tier_s(delay_s)` seconds, then ack it.

        The copy is published (and confirmed) before the ack, so a failure in between duplicates, never loses.
        Raises BrokerUnavailable if the copy was not confirmed (the message is then not acked).
        """
        ...

    async def dead_letter(self, reason: str) -> None:
        """Move it to the dead-letter queue with `reason` (no secrets, no personal data): publish confirmed, then
        ack."""
        ...

    async def requeue(self) -> None:
        """Give it back to the queue for another consumer (used when draining on shutdown)."""
        ...


Handler = Callable[[Received], Awaitable[None]]
"""Handles one message and settles it. If it raises, the message is requeued (and the error logged); if it returns
without settling, the message is requeued too (and an error logged, as that is a bug)."""


class Broker(Protocol):
    """Queues deliveries durably between the dispatcher and the channel workers."""

    async def connect(self) -> None:
        """Connect and declare the whole topology; idempotent. Raises BrokerUnavailable when unreachable."""
        ...

    async def publish(self, queue: str, message: Message) -> None:
        """Queue `message` on work queue `queue`: persistent, publisher-confirmed, mandatory, bounded in time.

        Returns once the broker has taken responsibility for it. Raises BrokerUnavailable (the message may not be
        queued: try again later) and ValueError for a name that is not a work queue.
        """
        ...

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> None:
        """Start handling messages of `queue` (a work queue or the dead-letter queue), at most `prefetch` at a time.

        Returns once subscribed. Call it again for more consumers; each has its own prefetch.
        """
        ...

    async def stop_consuming(self, *, timeout_s: float | None = None) -> None:
        """Stop taking messages and wait for the handlers in flight to finish (drain); the connection stays open.

        After `timeout_s` the handlers still running are cancelled and their messages go back to their queues.
        """
        ...

    async def queue_depth(self, queue: str) -> int:
        """How many messages are ready (not in flight) on `queue`: a work queue, the dead-letter queue or a retry
        queue."""
        ...

    async def close(self) -> None:
        """Stop consuming without draining (cancelled handlers' messages go back to their queues) and disconnect."""
        ...

    @property
    def connected(self) -> bool:
        """Whether the broker is reachable now (False while it reconnects)."""
        ...


def retry_tier_s(delay_s: float) -> float:
    """The retry tier a delay waits in: the smallest at least `delay_s`, or the largest if none is."""
    if math.isnan(delay_s):
        raise ValueError("delay_s is NaN")
    return next((tier for tier in RETRY_TIERS_S if tier >= delay_s), RETRY_TIERS_S[-1])


@dataclass(frozen=True, slots=True)
class Topology:
    """The queues a broker declares and checks names against: work queues (each with its retry tiers) and one
    dead-letter queue. Logical names; a broker's `namespace` prefixes the real ones."""

    work_queues: tuple[str, ...]
    dead_letter_queue: str

    def __post_init__(self) -> None:
        names = (*self.work_queues, self.dead_letter_queue)
        if not self.work_queues or len(set(names)) != len(names) or not all(names):
            raise ValueError(f"a topology needs distinct, non-empty queue names: {names!r}")

    def retry_queue(self, queue: str, tier_s: float) -> str:
        """The logical name of `queue`'s retry queue for `tier_s`, e.g. `retry.email.queue.30s`."""
        if queue not in self.work_queues:
            raise ValueError(f"no retry queues for {queue!r}: only for {', '.join(self.work_queues)}")
        if tier_s not in RETRY_TIERS_S:
            raise ValueError(f"{tier_s!r} is not one of RETRY_TIERS_S {RETRY_TIERS_S}")
        return f"retry.{queue}.{tier_s:g}s"

    def all_queues(self) -> tuple[str, ...]:
        """Every logical queue name: work queues, their retry queues, the dead-letter queue."""
        retries = tuple(self.retry_queue(queue, tier) for queue in self.work_queues for tier in RETRY_TIERS_S)
        return (*self.work_queues, *retries, self.dead_letter_queue)

    def check_publish_queue(self, queue: str) -> None:
        """ValueError unless `queue` is a work queue (the only queues anyone publishes to directly)."""
        if queue not in self.work_queues:
            raise ValueError(f"cannot publish to {queue!r}: the work queues are {', '.join(self.work_queues)}")

    def check_consume_queue(self, queue: str) -> None:
        """ValueError unless `queue` is a work queue or the dead-letter queue."""
        if queue not in (*self.work_queues, self.dead_letter_queue):
            raise ValueError(
                f"cannot consume {queue!r}: only {', '.join(self.work_queues)} and {self.dead_letter_queue}"
            )

    def check_known_queue(self, queue: str) -> None:
        """ValueError unless `queue` is a queue of the topology."""
        if queue not in self.all_queues():
            raise ValueError(f"unknown queue {queue!r}")


def dead_letter_headers(message: Message, *, reason: str, source_queue: str) -> dict[str, str]:
    """The message's headers plus why and where from it was dead-lettered."""
    return {**message.headers, REASON_HEADER: reason[:MAX_REASON_CHARS], SOURCE_QUEUE_HEADER: source_queue}


def is_broker_header(key: str) -> bool:
    """Whether a header is the broker's bookkeeping (x-death, delivery counts), not the publisher's."""
    return key in _BROKER_HEADERS or key.startswith(_BROKER_HEADER_PREFIXES)


def check_message(message: Message) -> None:
    """ValueError unless the message has a delivery id and string headers of the publisher's own."""
    if not message.message_id:
        raise ValueError("a message needs a message_id (the delivery id)")
    for key, value in message.headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"message headers must map str to str, not {key!r}: {value!r}")
        if is_broker_header(key):
            raise ValueError(f"header {key!r} is the broker's own")


class SettlingReceived(ABC):
    """What both implementations' Received share: settle exactly once, and publish before acking.

    Subclasses say how to ack, requeue and publish a copy; this class keeps the order and the bookkeeping.
    """

    __slots__ = ("delivery_count", "message", "queue", "redelivered", "settled", "topology")

    def __init__(
        self, message: Message, *, topology: Topology, queue: str, redelivered: bool, delivery_count: int
    ) -> None:
        self.message = message
        self.topology = topology
        self.queue = queue
        self.redelivered = redelivered
        self.delivery_count = delivery_count
        self.settled = False

    async def ack(self) -> None:
        """Done with it: remove it from the queue."""
        self._settle()
        await self._ack()

    async def retry(self, delay_s: float) -> None:
        """Deliver it again on the same queue after `retry_tier_s(delay_s)` seconds: publish confirmed, then ack."""
        tier_s = retry_tier_s(delay_s)
        self.topology.retry_queue(self.queue, tier_s)  # ValueError for the dead-letter queue, before anything happens
        self._settle()
        try:
            await self._publish_retry(tier_s)
        except BaseException:
            # Not queued anywhere else: the message is still ours to requeue (the handler's failure does it).
            self.settled = False
            raise
        await self._ack()

    async def dead_letter(self, reason: str) -> None:
        """Move it to the dead-letter queue with `reason`: publish confirmed, then ack."""
        self._settle()
        try:
            await self._publish_dead_letter(dead_letter_headers(self.message, reason=reason, source_queue=self.queue))
        except BaseException:
            self.settled = False
            raise
        await self._ack()

    async def requeue(self) -> None:
        """Give it back to the queue (it counts towards the delivery limit, as any return does)."""
        self._settle()
        await self._requeue()

    def _settle(self) -> None:
        if self.settled:
            raise BrokerError(f"message {self.message.message_id} was already settled")
        self.settled = True

    @abstractmethod
    async def _ack(self) -> None: ...

    @abstractmethod
    async def _requeue(self) -> None: ...

    @abstractmethod
    async def _publish_retry(self, tier_s: float) -> None: ...

    @abstractmethod
    async def _publish_dead_letter(self, headers: dict[str, str]) -> None: ...


# Headers worth having on every log line of a handler; the delivery id is bound as well.
_LOGGED_HEADERS = ("request_id", "notification_id")


async def run_handler(handler: Handler, received: SettlingReceived) -> None:
    """Run `handler` on one message with its ids bound to the log context; requeue the message if it raised or
    returned without settling it. Never raises, except CancelledError."""
    ids = {key: received.message.headers[key] for key in _LOGGED_HEADERS if key in received.message.headers}
    with structlog.contextvars.bound_contextvars(delivery_id=received.message.message_id, **ids):
        try:
            await handler(received)
        except Exception:
            log.exception("broker_handler_failed", queue=received.queue, delivery_count=received.delivery_count)
        else:
            if received.settled:
                return
            log.error("broker_message_unsettled", queue=received.queue, delivery_count=received.delivery_count)
        if received.settled:
            return
        try:
            await received.requeue()
        except BrokerError as exc:
            # The broker gives an unsettled message back anyway when the channel or connection closes.
            log.warning("broker_requeue_failed", queue=received.queue, error=str(exc))


def create_broker(
    url: str | None,
    *,
    topology: Topology,
    namespace: str = "",
    publish_timeout_s: float = 5.0,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    connect_timeout_s: float = 10.0,
) -> Broker:
    """A RabbitMQBroker for an `amqp://` or `amqps://` URL; the InMemoryBroker (local mode) for None or "".

    The timeouts concern RabbitMQ only: in memory nothing waits.
    """
    if not url:
        from clarion.core.broker_memory import InMemoryBroker

        return InMemoryBroker(topology=topology, namespace=namespace, delivery_limit=delivery_limit)
    if not url.startswith(("amqp://", "amqps://")):
        raise ValueError("the broker URL must be amqp:// or amqps://, e.g. amqp://guest:guest@127.0.0.1:5672/")
    from clarion.core.broker_rabbitmq import RabbitMQBroker

    return RabbitMQBroker(
        url,
        topology=topology,
        namespace=namespace,
        publish_timeout_s=publish_timeout_s,
        delivery_limit=delivery_limit,
        connect_timeout_s=connect_timeout_s,
    )


def __getattr__(name: str) -> object:
    # The implementations import this module, so it imports them only when asked: `from clarion.core.broker import
    # RabbitMQBroker` works whichever module is imported first, and local mode never imports aio-pika.
    if name == "RabbitMQBroker":
        from clarion.core.broker_rabbitmq import RabbitMQBroker

        return RabbitMQBroker
    if name == "InMemoryBroker":
        from clarion.core.broker_memory import InMemoryBroker

        return InMemoryBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
