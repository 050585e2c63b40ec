"""The in-process broker of local mode: RabbitMQBroker's semantics on asyncio, in memory."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from dataclasses import dataclass

from clarion.core.broker import (
    DEFAULT_DELIVERY_LIMIT,
    DELIVERY_LIMIT_REASON,
    BrokerUnavailable,
    Handler,
    Message,
    SettlingReceived,
    Topology,
    check_message,
    dead_letter_headers,
    run_handler,
)
from clarion.core.logging import get_logger

log = get_logger(__name__)


@dataclass(slots=True)
class _Envelope:
    """A message in a queue, with what the broker knows about its past."""

    message: Message
    # Deliveries before this one, retries included (Received.delivery_count).
    delivery_count: int = 0
    # Returns to this queue since it entered it: the delivery limit counts these, as RabbitMQ's x-delivery-count.
    requeues: int = 0
    redelivered: bool = False


class _Queue:
    """A FIFO that hands messages to waiting consumers; a returned message goes back to the head."""

    def __init__(self) -> None:
        self.ready: deque[_Envelope] = deque()
        self._getters: deque[asyncio.Future[_Envelope]] = deque()

    def put(self, envelope: _Envelope, *, front: bool = False) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(envelope)
                return
        if front:
            self.ready.appendleft(envelope)
        else:
            self.ready.append(envelope)

    async def get(self) -> _Envelope:
        if self.ready:
            return self.ready.popleft()
        getter: asyncio.Future[_Envelope] = asyncio.get_running_loop().create_future()
        self._getters.append(getter)
        try:
            return await getter
        except asyncio.CancelledError:
            # Handed a message just as the consumer was cancelled: it must not vanish.
            if getter.done() and not getter.cancelled():
                self.put(getter.result(), front=True)
            raise


class _Consumer:
    """One `consume` call: its handler, its prefetch window and the handlers it has in flight."""

    def __init__(self, queue: str, handler: Handler, prefetch: int) -> None:
        self.queue = queue
        self.handler = handler
        self.window = asyncio.Semaphore(prefetch)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.loop_task: asyncio.Task[None] | None = None


class _MemoryReceived(SettlingReceived):
    __slots__ = ("_broker", "_envelope")

    def __init__(self, broker: InMemoryBroker, envelope: _Envelope, queue: str) -> None:
        super().__init__(
            envelope.message,
            topology=broker.topology,
            queue=queue,
            redelivered=envelope.redelivered,
            delivery_count=envelope.delivery_count,
        )
        self._broker = broker
        self._envelope = envelope

    async def _ack(self) -> None:
        self._broker._check_open()

    async def _requeue(self) -> None:
        self._broker._check_open()
        self._broker._return(self.queue, self._envelope)

    async def _publish_retry(self, tier_s: float) -> None:
        self._broker._check_open()
        self._broker._delay(self.queue, tier_s, _Envelope(self.message, self.delivery_count + 1))

    async def _publish_dead_letter(self, headers: dict[str, str]) -> None:
        self._broker._check_open()
        message = dataclasses.replace(self.message, headers=headers)
        # Deliveries are counted afresh in the dead-letter queue, as RabbitMQ does.
        self._broker._dead_letters.put(_Envelope(message))


class InMemoryBroker:
    """The Broker of local mode, in this process's memory. NOT durable: whatever is queued when the process stops
    is lost (the delivery table, the outbox, is what survives; the dispatcher publishes again what was not sent).

    Same observable semantics as RabbitMQBroker: work queues, fixed-TTL retry tiers, the dead-letter queue, the
    delivery limit, per-consumer prefetch, draining. One event loop only; not thread-safe.
    """

    def __init__(
        self, *, topology: Topology, namespace: str = "", delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    ) -> None:
        if delivery_limit < 0:
            raise ValueError("delivery_limit must be >= 0")
        # Nothing is shared between brokers in memory; the namespace is kept for parity and logs.
        self.namespace = namespace
        self.delivery_limit = delivery_limit
        self.topology = topology
        self._queues = {name: _Queue() for name in topology.all_queues()}
        self._dead_letters = self._queues[topology.dead_letter_queue]
        self._consumers: list[_Consumer] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._connected = False

    async def connect(self) -> None:
        """Start taking messages; idempotent."""
        self._connected = True

    async def publish(self, queue: str, message: Message) -> None:
        """Queue `message` on work queue `queue` (in memory: at once)."""
        self.topology.check_publish_queue(queue)
        check_message(message)
        self._check_open()
        self._queues[queue].put(_Envelope(dataclasses.replace(message, headers=dict(message.headers))))

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> None:
        """Start handling messages of `queue`, at most `prefetch` at a time."""
        self.topology.check_consume_queue(queue)
        if prefetch < 1:
            raise ValueError("prefetch must be >= 1")
        self._check_open()
        consumer = _Consumer(queue, handler, prefetch)
        consumer.loop_task = asyncio.create_task(self._deliver(consumer), name=f"broker-consumer-{queue}")
        self._consumers.append(consumer)

    async def stop_consuming(self, *, timeout_s: float | None = None) -> None:
        """Stop taking messages and wait for the handlers in flight (up to `timeout_s`, then cancel them)."""
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            if consumer.loop_task is not None:
                consumer.loop_task.cancel()
        await asyncio.gather(*(c.loop_task for c in consumers if c.loop_task is not None), return_exceptions=True)
        in_flight = {task for consumer in consumers for task in consumer.in_flight}
        if not in_flight:
            return
        _, pending = await asyncio.wait(in_flight, timeout=timeout_s)
        if pending:
            log.warning("broker_drain_timeout", cancelled=len(pending))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def queue_depth(self, queue: str) -> int:
        """Messages ready on `queue` (a work queue, the dead-letter queue or a retry queue)."""
        self.topology.check_known_queue(queue)
        return len(self._queues[queue].ready)

    @property
    def connected(self) -> bool:
        """Between `connect` and `close`."""
        return self._connected

    async def close(self) -> None:
        """Cancel consumers and handlers (their messages go back to their queues) and the retry timers."""
        consumers, self._consumers = self._consumers, []
        tasks = {task for consumer in consumers for task in consumer.in_flight}
        tasks.update(consumer.loop_task for consumer in consumers if consumer.loop_task is not None)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._connected = False

    def _check_open(self) -> None:
        if not self._connected:
            raise BrokerUnavailable("the in-memory broker is not connected")

    async def _deliver(self, consumer: _Consumer) -> None:
        queue = self._queues[consumer.queue]
        while True:
            await consumer.window.acquire()
            try:
                envelope = await queue.get()
            except asyncio.CancelledError:
                consumer.window.release()
                raise
            received = _MemoryReceived(self, envelope, consumer.queue)
            task = asyncio.create_task(self._handle(consumer, received, envelope))
            consumer.in_flight.add(task)
            task.add_done_callback(consumer.in_flight.discard)

    async def _handle(self, consumer: _Consumer, received: _MemoryReceived, envelope: _Envelope) -> None:
        try:
            await run_handler(consumer.handler, received)
        finally:
            # Cancelled before settling (drain timeout, close): back to the queue, as a closed channel does.
            if not received.settled:
                received.settled = True
                self._return(consumer.queue, envelope)
            consumer.window.release()

    def _return(self, queue: str, envelope: _Envelope) -> None:
        """A message given back unsettled: redelivered at the head, or dead-lettered past the delivery limit."""
        envelope.delivery_count += 1
        envelope.requeues += 1
        envelope.redelivered = True
        if envelope.requeues <= self.delivery_limit:
            self._queues[queue].put(envelope, front=True)
            return
        log.warning("broker_delivery_limit", queue=queue, delivery_id=envelope.message.message_id)
        headers = dead_letter_headers(envelope.message, reason=DELIVERY_LIMIT_REASON, source_queue=queue)
        message = dataclasses.replace(envelope.message, headers=headers)
        self._dead_letters.put(_Envelope(message))

    def _delay(self, queue: str, tier_s: float, envelope: _Envelope) -> None:
        """Hold `envelope` in `queue`'s retry tier for `tier_s`, then put it back on `queue`."""
        tier = self._queues[self.topology.retry_queue(queue, tier_s)]
        tier.put(envelope)

        def expire() -> None:
            self._timers.discard(timer)
            # A fixed delay per tier: the one expiring is always the oldest, at the head.
            tier_envelope = tier.ready.popleft()
            self._queues[queue].put(tier_envelope)

        timer = asyncio.get_running_loop().call_later(tier_s, expire)
        self._timers.add(timer)
