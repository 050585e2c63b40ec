"""The Broker on RabbitMQ (3.10+) through aio-pika: quorum work queues, fixed-TTL retry tiers, a dead-letter queue.

Exchanges and queues, drawn here with the delivery core's topology (clarion.delivery.queues); every name is prefixed
with `<namespace>.` when a namespace is set:

    clarion.deliveries (direct) --email.queue--> email.queue  (quorum) --x-dead-letter--> clarion.dlx
                                --push.queue---> push.queue   (quorum) --x-dead-letter--> clarion.dlx
    clarion.retry (direct) --retry.email.queue.30s--> retry.email.queue.30s (quorum, x-message-ttl 30000)
                                                        --x-dead-letter--> clarion.deliveries / email.queue
    clarion.dlx (direct) --failed.queue--> failed.queue (quorum)

Work queues dead-letter a message requeued more than `delivery_limit` times (a poison message) to the dead-letter
queue (failed.queue); retry
queues dead-letter every message back to its work queue when its TTL expires. Both dead-letter at-least-once (the
source keeps a message until the target confirms it), which RabbitMQ allows only with `x-overflow: reject-publish`.
The dead-letter queue is a quorum queue too: dead letters are the messages we can least afford to lose, and in a
cluster a quorum queue survives losing a node where a classic one does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import (
    CONNECTION_EXCEPTIONS,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)
from yarl import URL

from clarion.core.broker import (
    DEFAULT_DELIVERY_LIMIT,
    DELIVERY_COUNT_HEADER,
    REASON_HEADER,
    RETRY_TIERS_S,
    SOURCE_QUEUE_HEADER,
    BrokerError,
    BrokerUnavailable,
    Handler,
    Message,
    SettlingReceived,
    Topology,
    Unroutable,
    check_message,
    is_broker_header,
    run_handler,
)
from clarion.core.logging import get_logger

log = get_logger(__name__)

DELIVERIES_EXCHANGE = "clarion.deliveries"
RETRY_EXCHANGE = "clarion.retry"
DEAD_LETTER_EXCHANGE = "clarion.dlx"
EXCHANGES = (DELIVERIES_EXCHANGE, RETRY_EXCHANGE, DEAD_LETTER_EXCHANGE)
RECONNECT_INTERVAL_S = 1.0
# Beyond these the dead-lettering arguments make a queue keep a message until its target confirms it.
_AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


class RabbitMQBroker:
    """The Broker on RabbitMQ. Each publish is persistent, mandatory, publisher-confirmed and bounded by
    `publish_timeout_s`; each consumer has its own channel and prefetch; the topology is declared at `connect` and,
    by aio-pika's robust channel, again after every reconnect.

    `delivery_limit` is part of the work queues' declaration: changing it on an existing deployment makes `connect`
    fail with BrokerError (RabbitMQ refuses to redeclare a queue with other arguments) until the queues are migrated.
    """

    def __init__(
        self,
        url: str,
        *,
        topology: Topology,
        namespace: str = "",
        publish_timeout_s: float = 5.0,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if delivery_limit < 0:
            raise ValueError("delivery_limit must be >= 0")
        self._url = url
        self.topology = topology
        self._namespace = namespace
        self._publish_timeout_s = publish_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._delivery_limit = delivery_limit
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._consumers: list[_Consumer] = []
        parsed = URL(url)
        # For logs and errors: never the credentials.
        self._where = f"{parsed.host}{f':{parsed.port}' if parsed.port else ''}{parsed.path}"

    def name(self, logical: str) -> str:
        """The real name of a queue or exchange: `<namespace>.<logical>`, or `logical` without a namespace."""
        return f"{self._namespace}.{logical}" if self._namespace else logical

    def queue_arguments(self, queue: str) -> dict[str, Any]:
        """The declaration arguments of a logical queue (the contract tests check the broker holds exactly these)."""
        topology = self.topology
        if queue in topology.work_queues:
            return {
                "x-queue-type": "quorum",
                "x-delivery-limit": self._delivery_limit,
                "x-dead-letter-exchange": self.name(DEAD_LETTER_EXCHANGE),
                "x-dead-letter-routing-key": topology.dead_letter_queue,
                **_AT_LEAST_ONCE,
            }
        if queue == topology.dead_letter_queue:
            return {"x-queue-type": "quorum"}
        for work_queue in topology.work_queues:
            for tier_s in RETRY_TIERS_S:
                if queue == topology.retry_queue(work_queue, tier_s):
                    return {
                        "x-queue-type": "quorum",
                        "x-message-ttl": round(tier_s * 1000),
                        "x-dead-letter-exchange": self.name(DELIVERIES_EXCHANGE),
                        "x-dead-letter-routing-key": work_queue,
                        **_AT_LEAST_ONCE,
                    }
        raise ValueError(f"unknown queue {queue!r}")

    async def connect(self) -> None:
        """Connect (robustly: aio-pika reconnects by itself) and declare the topology; idempotent.

        Raises BrokerUnavailable when RabbitMQ cannot be reached within `connect_timeout_s`, and BrokerError when
        the queues it holds were declared with other arguments.
        """
        created = self._connection is None or self._connection.is_closed
        try:
            if self._connection is None or self._connection.is_closed:
                # aio-pika's timeout bounds the whole handshake and, failing, stops its reconnection task. Cancelling
                # connect_robust from outside instead would leave that task retrying forever on a connection
                # nobody holds.
                self._connection = await aio_pika.connect_robust(
                    self._url,
                    timeout=self._connect_timeout_s,
                    # aio-pika waits 5 s between reconnection attempts by default: up to 5 s of deliveries held
                    # after RabbitMQ is back. An attempt a second costs nothing while it is away.
                    reconnect_interval=RECONNECT_INTERVAL_S,
                    client_properties={"connection_name": self.name("clarion")},
                )
                self._connection.reconnect_callbacks.add(self._on_reconnect)
                self._publish_channel = None
            async with asyncio.timeout(self._connect_timeout_s):
                await self._declare_topology(self._connection)
        except ChannelPreconditionFailed as exc:
            await self.close()
            raise BrokerError(f"RabbitMQ holds a different topology than this version declares: {exc}") from exc
        except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
            if created:
                await self.close()
            # Else a connection that was up is reconnecting: keep it (and its consumers) and let it.
            raise BrokerUnavailable(f"cannot connect to RabbitMQ at {self._where}: {exc!r}") from exc
        log.info("broker_connected", broker=self._where, namespace=self._namespace)

    async def _declare_topology(self, connection: AbstractRobustConnection) -> None:
        first = self._publish_channel is None
        if self._publish_channel is None:
            # Without on_return_raises an unroutable message is confirmed and silently returned, never queued.
            self._publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        channel = self._publish_channel
        # Declared robustly the first time: aio-pika then declares it all again, exchanges first, on every
        # reconnect. Later connect() calls only check it, without registering everything twice.
        robust = first
        exchanges: dict[str, AbstractExchange] = {
            exchange: await channel.declare_exchange(
                self.name(exchange), aio_pika.ExchangeType.DIRECT, durable=True, robust=robust
            )
            for exchange in EXCHANGES
        }
        topology = self.topology
        bindings = {topology.dead_letter_queue: (DEAD_LETTER_EXCHANGE, topology.dead_letter_queue)}
        for queue in topology.work_queues:
            bindings[queue] = (DELIVERIES_EXCHANGE, queue)
            for tier_s in RETRY_TIERS_S:
                retry = topology.retry_queue(queue, tier_s)
                bindings[retry] = (RETRY_EXCHANGE, retry)
        for queue in topology.all_queues():
            declared = await channel.declare_queue(
                self.name(queue), durable=True, arguments=self.queue_arguments(queue), robust=robust
            )
            exchange, routing_key = bindings[queue]
            await declared.bind(exchanges[exchange], routing_key, robust=robust)
        if first:
            self._exchanges = exchanges

    def _on_reconnect(self, _connection: object) -> None:
        log.warning("broker_reconnected", broker=self._where)

    async def publish(self, queue: str, message: Message) -> None:
        """Queue `message` on work queue `queue`; returns once RabbitMQ confirmed it.

        Raises BrokerUnavailable (not connected, timed out, nacked), its subclass Unroutable (no queue bound), and
        ValueError for a name that is not a work queue.
        """
        self.topology.check_publish_queue(queue)
        check_message(message)
        await self._send(DELIVERIES_EXCHANGE, queue, message, dict(message.headers))

    async def _send(self, exchange: str, routing_key: str, message: Message, headers: dict[str, str | int]) -> None:
        """Publish to one of our exchanges (logical name): persistent, mandatory, confirmed, bounded in time."""
        if self._publish_channel is None or exchange not in self._exchanges:
            raise BrokerUnavailable("the RabbitMQ broker is not connected")
        amqp_message = aio_pika.Message(
            message.body,
            message_id=message.message_id,
            headers=dict(headers),
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            # A robust channel that is reconnecting makes a publish wait for it: the timeout is what bounds it.
            async with asyncio.timeout(self._publish_timeout_s):
                await self._exchanges[exchange].publish(amqp_message, routing_key, mandatory=True)
        except PublishError as exc:
            raise Unroutable(f"RabbitMQ returned the message: no queue bound for {routing_key!r} ({exc})") from exc
        except DeliveryError as exc:
            raise BrokerUnavailable(f"RabbitMQ did not confirm the message: {exc}") from exc
        except TimeoutError as exc:
            raise BrokerUnavailable(f"publish not confirmed within {self._publish_timeout_s} s") from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise BrokerUnavailable(f"publish failed: {exc!r}") from exc

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> None:
        """Start handling messages of `queue` on a channel of its own, at most `prefetch` unsettled at a time."""
        self.topology.check_consume_queue(queue)
        if prefetch < 1:
            raise ValueError("prefetch must be >= 1")
        if self._connection is None or self._connection.is_closed:
            raise BrokerUnavailable("the RabbitMQ broker is not connected")
        channel: AbstractRobustChannel | None = None
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                channel = await self._connection.channel()
                # Per consumer (global_=False): quorum queues refuse a channel-wide prefetch.
                await channel.set_qos(prefetch_count=prefetch, global_=False)
                amqp_queue = await channel.declare_queue(
                    self.name(queue), durable=True, arguments=self.queue_arguments(queue)
                )
                consumer = _Consumer(queue, handler, channel, amqp_queue)
                consumer.tag = await amqp_queue.consume(functools.partial(self._on_message, consumer))
        except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
            if channel is not None:
                await _close_quietly(channel)
            raise BrokerUnavailable(f"cannot consume {queue}: {exc!r}") from exc
        self._consumers.append(consumer)
        log.info("broker_consuming", queue=queue, prefetch=prefetch)

    async def _on_message(self, consumer: _Consumer, incoming: AbstractIncomingMessage) -> None:
        if consumer.stopping:
            # Delivered just before the consumer was cancelled: left unsettled, it goes back to the queue when the
            # consumer's channel closes.
            return
        # Handlers run in tasks of our own, not aio-pika's: closing the channel would cancel those, and draining
        # must let them finish.
        received = _RabbitReceived(self, consumer.logical_queue, incoming)
        task = asyncio.create_task(run_handler(consumer.handler, received))
        consumer.in_flight.add(task)
        task.add_done_callback(consumer.in_flight.discard)

    async def stop_consuming(self, *, timeout_s: float | None = None) -> None:
        """Cancel the consumers, wait for the handlers in flight (up to `timeout_s`, then cancel them), then close
        the consumers' channels, which gives back anything unsettled. The connection stays open."""
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(self._cancel_consumer(consumer) for consumer in consumers))
        in_flight = {task for consumer in consumers for task in consumer.in_flight}
        if in_flight:
            _, pending = await asyncio.wait(in_flight, timeout=timeout_s)
            if pending:
                log.warning("broker_drain_timeout", cancelled=len(pending))
                await _cancel(pending)
        await asyncio.gather(*(_close_quietly(consumer.channel) for consumer in consumers))

    async def _cancel_consumer(self, consumer: _Consumer) -> None:
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                if consumer.tag is not None:
                    await consumer.queue.cancel(consumer.tag)
        except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
            # Its channel is closed after the drain, which stops the deliveries as well.
            log.warning("broker_cancel_failed", queue=consumer.logical_queue, error=repr(exc))
        consumer.stopping = True

    async def queue_depth(self, queue: str) -> int:
        """Messages ready (not in flight) on `queue`: a work queue, the dead-letter queue or a retry queue."""
        self.topology.check_known_queue(queue)
        if self._connection is None or self._connection.is_closed:
            raise BrokerUnavailable("the RabbitMQ broker is not connected")
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                # A channel of its own: a passive declare of a missing queue closes the channel it is made on.
                channel = await self._connection.channel(publisher_confirms=False)
                try:
                    declared = await channel.declare_queue(self.name(queue), passive=True, robust=False)
                finally:
                    await _close_quietly(channel)
        except ChannelNotFoundEntity as exc:
            raise BrokerError(f"queue {self.name(queue)} does not exist on RabbitMQ") from exc
        except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
            raise BrokerUnavailable(f"cannot read the depth of {queue}: {exc!r}") from exc
        result = declared.declaration_result
        return int(result.message_count or 0)

    @property
    def connected(self) -> bool:
        """Whether RabbitMQ is reachable now: False before `connect`, while aio-pika reconnects, and after close."""
        return self._connection is not None and self._connection.connected.is_set()

    async def close(self) -> None:
        """Cancel the handlers without draining and disconnect: RabbitMQ requeues whatever was unacked."""
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            consumer.stopping = True
        await _cancel({task for consumer in consumers for task in consumer.in_flight})
        connection, self._connection = self._connection, None
        self._publish_channel = None
        self._exchanges.clear()
        if connection is not None:
            await _close_quietly(connection)

    async def delete_topology(self) -> None:
        """For tests: close this broker, then delete its namespace's queues (with their messages) and exchanges.

        Close the other brokers on the namespace first: a consumer whose queue disappears declares it again.
        Refuses without a namespace.
        """
        if not self._namespace:
            raise BrokerError("refusing to delete the un-namespaced (production) topology")
        await self.close()
        async with asyncio.timeout(self._connect_timeout_s):
            connection = await aio_pika.connect(self._url, timeout=self._connect_timeout_s)
            async with connection:
                channel = await connection.channel()
                for queue in self.topology.all_queues():
                    await channel.queue_delete(self.name(queue))
                for exchange in EXCHANGES:
                    await channel.exchange_delete(self.name(exchange))

    def logical_queue(self, name: str) -> str:
        """The logical name of a real queue name (without the namespace)."""
        prefix = f"{self._namespace}." if self._namespace else ""
        return name.removeprefix(prefix)


class _Consumer:
    """One `consume` call: its channel, subscription and handlers in flight."""

    def __init__(self, logical_queue: str, handler: Handler, channel: AbstractRobustChannel, queue: AbstractQueue):
        self.logical_queue = logical_queue
        self.handler = handler
        self.channel = channel
        self.queue = queue
        self.tag: str | None = None
        # Set once cancelled: deliveries still arriving are not handled.
        self.stopping = False
        self.in_flight: set[asyncio.Task[None]] = set()


class _RabbitReceived(SettlingReceived):
    __slots__ = ("_broker", "_incoming")

    def __init__(self, broker: RabbitMQBroker, queue: str, incoming: AbstractIncomingMessage) -> None:
        raw = dict(incoming.headers or {})
        headers = {key: _text(value) for key, value in raw.items() if not is_broker_header(key)}
        deliveries_here = _int(raw.get("x-delivery-count"))
        if queue == broker.topology.dead_letter_queue:
            # Counted afresh in the dead-letter queue, as InMemoryBroker does.
            delivery_count = deliveries_here
            if REASON_HEADER not in headers:
                # Dead-lettered by RabbitMQ itself (the delivery limit): say so as dead_letter() does.
                headers.update(_death_headers(broker, raw.get("x-death")))
        else:
            delivery_count = _int(raw.get(DELIVERY_COUNT_HEADER)) + deliveries_here
        super().__init__(
            Message(incoming.message_id or "", incoming.body, headers, incoming.content_type or "application/json"),
            topology=broker.topology,
            queue=queue,
            redelivered=bool(incoming.redelivered),
            delivery_count=delivery_count,
        )
        self._broker = broker
        self._incoming = incoming

    async def _ack(self) -> None:
        await self._settle_on_broker(self._incoming.ack())

    async def _requeue(self) -> None:
        await self._settle_on_broker(self._incoming.nack(requeue=True))

    async def _publish_retry(self, tier_s: float) -> None:
        target = self._broker.topology.retry_queue(self.queue, tier_s)
        headers: dict[str, str | int] = {**self.message.headers, DELIVERY_COUNT_HEADER: self.delivery_count + 1}
        await self._broker._send(RETRY_EXCHANGE, target, self.message, headers)

    async def _publish_dead_letter(self, headers: dict[str, str]) -> None:
        await self._broker._send(
            DEAD_LETTER_EXCHANGE, self._broker.topology.dead_letter_queue, self.message, dict(headers)
        )

    async def _settle_on_broker(self, settle: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(self._broker._publish_timeout_s):
                await settle
        except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
            # The channel it came on is gone: RabbitMQ has requeued it already and will deliver it again.
            raise BrokerUnavailable(f"cannot settle message {self.message.message_id}: {exc!r}") from exc


def _death_headers(broker: RabbitMQBroker, deaths: object) -> dict[str, str]:
    # x-death lists the message's dead-letterings, the latest first.
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], dict):
        return {}
    latest = deaths[0]
    return {
        REASON_HEADER: _text(latest.get("reason", "")),
        SOURCE_QUEUE_HEADER: broker.logical_queue(_text(latest.get("queue", ""))),
    }


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def _int(value: object) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str | bytes) and value.isdigit():
        return int(value)
    return 0


async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _close_quietly(closable: AbstractRobustChannel | AbstractRobustConnection) -> None:
    # Closing something already closed (or broken) leaves it closed, which is all we wanted.
    with contextlib.suppress(*CONNECTION_EXCEPTIONS):
        await closable.close()
