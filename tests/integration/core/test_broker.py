"""The broker contract, run against both implementations (real RabbitMQ and in memory), plus RabbitMQ's own duties:
persistence, the declared topology, unroutable messages, timeouts, reconnection and unacked messages coming back.

Each test has a namespace of its own on the shared RabbitMQ, deleted afterwards. The server is never restarted: a
TCP proxy in front of it stands in for a network that stalls or drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import aio_pika
import pytest
import structlog
from aio_pika.exceptions import ChannelPreconditionFailed
from yarl import URL

from clarion.core.broker import (
    DELIVERY_LIMIT_REASON,
    REASON_HEADER,
    RETRY_TIERS_S,
    SOURCE_QUEUE_HEADER,
    Broker,
    BrokerError,
    BrokerUnavailable,
    InMemoryBroker,
    Message,
    RabbitMQBroker,
    Received,
    Topology,
    Unroutable,
    create_broker,
    retry_tier_s,
)
from clarion.delivery.queues import EMAIL_QUEUE, FAILED_QUEUE, PUSH_QUEUE, TOPOLOGY
from tests.conftest import free_port, unavailable

TEST_RABBITMQ_URL = os.environ.get("CLARION_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
BACKENDS = ["memory", "rabbitmq"]
# Small, so a poison message reaches failed.queue quickly.
DELIVERY_LIMIT = 3
# How long a test waits for something that should happen at once; generous for a loaded CI machine.
WAIT_S = 5.0


class BrokerFactory(Protocol):
    async def __call__(
        self, *, url: str | None = None, publish_timeout_s: float = 2.0, topology: Topology = TOPOLOGY
    ) -> Broker: ...


def a_message(n: int = 1, **headers: str) -> Message:
    return Message(
        message_id=f"delivery-{n}-{uuid.uuid4().hex[:8]}",
        body=b'{"delivery_id":"%d","payload":{"subject":"Ol\xc3\xa1"}}' % n,
        headers={"request_id": f"req-{n}", "notification_id": f"notif-{n}", **headers},
        # Not the default, so every test shows the content type surviving retries and dead-lettering.
        content_type="application/x-protobuf; proto=tests.Thing",
    )


class Inbox:
    """A handler that records every message it is given, then does `action` with it (by default: ack)."""

    def __init__(self, action: Callable[[Received], Awaitable[None]] | None = None) -> None:
        self.received: asyncio.Queue[Received] = asyncio.Queue()
        self.action = action

    async def __call__(self, received: Received) -> None:
        self.received.put_nowait(received)
        if self.action is None:
            await received.ack()
        else:
            await self.action(received)

    async def next(self, timeout_s: float = WAIT_S) -> Received:
        async with asyncio.timeout(timeout_s):
            return await self.received.get()

    async def nothing_more(self, wait_s: float = 0.2) -> None:
        await asyncio.sleep(wait_s)
        assert self.received.empty(), "no further delivery expected"


async def hang(received: Received) -> None:
    """A handler that never finishes (until cancelled) and never settles."""
    await asyncio.Event().wait()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S) -> None:
    """Wait until `check()` holds; fail the test if it never does."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def depth_is(broker: Broker, queue: str, expected: int) -> None:
    async def check() -> bool:
        return await broker.queue_depth(queue) == expected

    await eventually(check)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The URL of the real RabbitMQ, or a skip/fail when it is not reachable."""

    async def ping() -> None:
        connection = await aio_pika.connect(TEST_RABBITMQ_URL, timeout=3)
        await connection.close()

    try:
        asyncio.run(ping())
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        unavailable("RabbitMQ", exc)
    return TEST_RABBITMQ_URL


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def make_rabbitmq_broker(rabbitmq_url: str, namespace: str) -> AsyncIterator[BrokerFactory]:
    """Factory of connected RabbitMQBrokers sharing this test's namespace (as the processes of one deployment
    share a vhost); all closed afterwards and the namespace's topology deleted."""
    brokers: list[RabbitMQBroker] = []
    topologies = {TOPOLOGY}

    async def make(*, url: str | None = None, publish_timeout_s: float = 2.0, topology: Topology = TOPOLOGY) -> Broker:
        topologies.add(topology)
        broker = RabbitMQBroker(
            url or rabbitmq_url,
            topology=topology,
            namespace=namespace,
            publish_timeout_s=publish_timeout_s,
            delivery_limit=DELIVERY_LIMIT,
            connect_timeout_s=3,
        )
        brokers.append(broker)
        await broker.connect()
        return broker

    yield make
    for broker in brokers:
        await broker.close()
    for topology in topologies:
        await RabbitMQBroker(rabbitmq_url, topology=topology, namespace=namespace).delete_topology()


@pytest.fixture
async def make_memory_broker() -> AsyncIterator[BrokerFactory]:
    brokers: list[InMemoryBroker] = []

    async def make(*, url: str | None = None, publish_timeout_s: float = 2.0, topology: Topology = TOPOLOGY) -> Broker:
        broker = InMemoryBroker(topology=topology, delivery_limit=DELIVERY_LIMIT)
        brokers.append(broker)
        await broker.connect()
        return broker

    yield make
    for broker in brokers:
        await broker.close()


@pytest.fixture(params=BACKENDS)
def make_broker(request: pytest.FixtureRequest) -> BrokerFactory:
    """Factory of connected brokers of one backend (the test runs once per backend)."""
    factory: BrokerFactory = request.getfixturevalue(f"make_{request.param}_broker")
    return factory


@pytest.fixture
async def broker(make_broker: BrokerFactory) -> Broker:
    return await make_broker()


@pytest.fixture
async def rabbitmq_admin(rabbitmq_url: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """A plain connection for looking at (and breaking) what the broker declared behind its back."""
    connection = await aio_pika.connect(rabbitmq_url, timeout=3)
    yield connection
    await connection.close()


# --- the contract: both implementations -------------------------------------------------------------------------


async def test_a_published_message_is_consumed_with_its_id_body_and_headers(broker: Broker) -> None:
    inbox = Inbox()
    sent = a_message()
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=1)
    await broker.publish(EMAIL_QUEUE, sent)
    received = await inbox.next()
    assert received.message == sent
    assert dict(received.message.headers) == {"request_id": "req-1", "notification_id": "notif-1"}
    assert (received.queue, received.redelivered, received.delivery_count) == (EMAIL_QUEUE, False, 0)


async def test_each_work_queue_gets_only_its_own_messages(broker: Broker) -> None:
    inbox = Inbox()
    await broker.consume(PUSH_QUEUE, inbox, prefetch=1)
    await broker.publish(EMAIL_QUEUE, a_message(1))
    await broker.publish(PUSH_QUEUE, push := a_message(2))
    assert (await inbox.next()).message == push
    await inbox.nothing_more()
    assert await broker.queue_depth(EMAIL_QUEUE) == 1


async def test_an_acked_message_is_gone(broker: Broker) -> None:
    inbox = Inbox()
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=1)
    await broker.publish(EMAIL_QUEUE, a_message())
    await inbox.next()
    await inbox.nothing_more()
    # Stopping gives back whatever the broker still counts as unacked: nothing must come back.
    await broker.stop_consuming()
    assert await broker.queue_depth(EMAIL_QUEUE) == 0
    assert await broker.queue_depth(FAILED_QUEUE) == 0


async def test_a_message_whose_handler_raises_is_redelivered_and_the_error_logged(broker: Broker) -> None:
    async def fail_once(received: Received) -> None:
        if received.delivery_count == 0:
            raise RuntimeError("provider exploded")
        await received.ack()

    inbox = Inbox(fail_once)
    sent = a_message()
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=1)
    with structlog.testing.capture_logs() as logs:
        await broker.publish(EMAIL_QUEUE, sent)
        first, second = await inbox.next(), await inbox.next()
    failures = [log for log in logs if log["event"] == "broker_handler_failed"]
    assert [(log["queue"], log["log_level"], log["exc_info"]) for log in failures] == [(EMAIL_QUEUE, "error", True)]
    assert (first.redelivered, first.delivery_count) == (False, 0)
    assert (second.redelivered, second.delivery_count) == (True, 1)
    assert second.message == sent
    await inbox.nothing_more()
    await broker.stop_consuming()
    assert await broker.queue_depth(EMAIL_QUEUE) == 0


async def test_a_message_whose_handler_returns_without_settling_is_redelivered(broker: Broker) -> None:
    async def forget_once(received: Received) -> None:
        if received.delivery_count > 0:
            await received.ack()

    inbox = Inbox(forget_once)
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=1)
    await broker.publish(EMAIL_QUEUE, a_message())
    await inbox.next()
    assert (await inbox.next()).redelivered


async def test_a_poison_message_goes_to_failed_queue_after_the_delivery_limit(broker: Broker) -> None:
    async def always_fail(received: Received) -> None:
        raise ValueError("cannot parse")

    inbox = Inbox(always_fail)
    sent = a_message()
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=1)
    await broker.publish(EMAIL_QUEUE, sent)
    await depth_is(broker, FAILED_QUEUE, 1)
    # The limit counts redeliveries: the first delivery plus DELIVERY_LIMIT more, as RabbitMQ's x-delivery-limit.
    assert [inbox.received.get_nowait().delivery_count for _ in range(inbox.received.qsize())] == [0, 1, 2, 3]
    assert await broker.queue_depth(EMAIL_QUEUE) == 0

    dead = Inbox()
    await broker.consume(FAILED_QUEUE, dead, prefetch=1)
    letter = await dead.next()
    assert (letter.message.message_id, letter.message.body) == (sent.message_id, sent.body)
    assert letter.message.headers == {
        **sent.headers,
        REASON_HEADER: DELIVERY_LIMIT_REASON,
        SOURCE_QUEUE_HEADER: EMAIL_QUEUE,
    }
    assert letter.queue == FAILED_QUEUE


async def test_retry_delivers_again_on_the_same_queue_after_the_tier_delay(broker: Broker) -> None:
    retried = asyncio.Event()
    retried_at = redelivered_at = 0.0

    async def retry_once(received: Received) -> None:
        nonlocal retried_at, redelivered_at
        if received.delivery_count == 0:
            await received.retry(0.5)  # waits in the 1 s tier
            retried_at = time.monotonic()
            retried.set()
        else:
            redelivered_at = time.monotonic()
            await received.ack()

    inbox = Inbox(retry_once)
    sent = a_message()
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=1)
    await broker.publish(EMAIL_QUEUE, sent)
    await inbox.next()
    await asyncio.wait_for(retried.wait(), WAIT_S)
    assert await broker.queue_depth(TOPOLOGY.retry_queue(EMAIL_QUEUE, 1)) == 1
    assert await broker.queue_depth(EMAIL_QUEUE) == 0
    again = await inbox.next()
    assert redelivered_at - retried_at >= 0.9, "delivered again before the tier's delay"
    assert again.message == sent, "the id, body and headers survive the retry"
    assert (again.queue, again.redelivered, again.delivery_count) == (EMAIL_QUEUE, False, 1)
    await inbox.nothing_more()
    assert await broker.queue_depth(TOPOLOGY.retry_queue(EMAIL_QUEUE, 1)) == 0


async def test_a_retry_longer_than_every_tier_waits_in_the_largest(broker: Broker) -> None:
    inbox = Inbox(lambda received: received.retry(24 * 3600.0))
    await broker.consume(PUSH_QUEUE, inbox, prefetch=1)
    await broker.publish(PUSH_QUEUE, a_message())
    await inbox.next()
    largest = RETRY_TIERS_S[-1]
    await depth_is(broker, TOPOLOGY.retry_queue(PUSH_QUEUE, largest), 1)
    for tier_s in RETRY_TIERS_S[:-1]:
        assert await broker.queue_depth(TOPOLOGY.retry_queue(PUSH_QUEUE, tier_s)) == 0
    assert await broker.queue_depth(TOPOLOGY.retry_queue(EMAIL_QUEUE, largest)) == 0
    assert await broker.queue_depth(PUSH_QUEUE) == 0


async def test_dead_letter_moves_the_message_to_failed_queue_with_the_reason(broker: Broker) -> None:
    inbox = Inbox(lambda received: received.dead_letter("invalid address"))
    sent = a_message()
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=1)
    await broker.publish(EMAIL_QUEUE, sent)
    await inbox.next()
    await depth_is(broker, FAILED_QUEUE, 1)
    await broker.stop_consuming()
    assert await broker.queue_depth(EMAIL_QUEUE) == 0

    dead = Inbox()
    await broker.consume(FAILED_QUEUE, dead, prefetch=1)
    letter = await dead.next()
    assert letter.message == Message(
        sent.message_id,
        sent.body,
        {**sent.headers, REASON_HEADER: "invalid address", SOURCE_QUEUE_HEADER: EMAIL_QUEUE},
        sent.content_type,
    )


async def test_a_dead_letter_can_be_replayed_to_its_source_queue(broker: Broker) -> None:
    await broker.consume(EMAIL_QUEUE, Inbox(lambda received: received.dead_letter("provider down")), prefetch=1)
    await broker.publish(EMAIL_QUEUE, sent := a_message())
    await depth_is(broker, FAILED_QUEUE, 1)
    await broker.stop_consuming()

    async def replay(received: Received) -> None:
        source = received.message.headers[SOURCE_QUEUE_HEADER]
        await broker.publish(source, Message(received.message.message_id, received.message.body, sent.headers))
        await received.ack()

    await broker.consume(FAILED_QUEUE, replay, prefetch=1)
    await depth_is(broker, EMAIL_QUEUE, 1)
    assert await broker.queue_depth(FAILED_QUEUE) == 0


async def test_the_broker_carries_any_topology_it_is_given(make_broker: BrokerFactory) -> None:
    # The broker is transport: the queues are its caller's. One of another design works the same way, and the
    # delivery core's queues are not among its own.
    orders = Topology(work_queues=("orders.queue",), dead_letter_queue="parked.queue")
    broker = await make_broker(topology=orders)
    with pytest.raises(ValueError, match="cannot publish"):
        await broker.publish(EMAIL_QUEUE, a_message())
    inbox = Inbox(lambda received: received.retry(1) if received.delivery_count == 0 else received.dead_letter("no"))
    await broker.consume("orders.queue", inbox, prefetch=1)
    await broker.publish("orders.queue", sent := a_message())
    first, second = await inbox.next(), await inbox.next(timeout_s=WAIT_S + 1)
    assert (first.message.message_id, second.message.message_id) == (sent.message_id, sent.message_id)
    await depth_is(broker, "parked.queue", 1)
    await broker.stop_consuming()
    dead = Inbox()
    await broker.consume("parked.queue", dead, prefetch=1)
    assert (await dead.next()).message.headers[SOURCE_QUEUE_HEADER] == "orders.queue"


def test_a_topology_needs_distinct_names() -> None:
    for work, dead in ((("a.queue", "a.queue"), "d.queue"), (("a.queue",), "a.queue"), ((), "d.queue"), (("",), "d")):
        with pytest.raises(ValueError, match="distinct"):
            Topology(work_queues=work, dead_letter_queue=dead)


async def test_prefetch_bounds_the_handlers_in_flight(broker: Broker) -> None:
    running, most = 0, 0

    async def slow(received: Received) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.1)
        running -= 1
        await received.ack()

    inbox = Inbox(slow)
    for n in range(5):
        await broker.publish(EMAIL_QUEUE, a_message(n))
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=2)
    for _ in range(5):
        await inbox.next()
    await broker.stop_consuming()
    assert most == 2, "two at a time: no more, and not one by one either"
    assert await broker.queue_depth(EMAIL_QUEUE) == 0


async def test_stop_consuming_waits_for_the_handlers_in_flight(broker: Broker) -> None:
    finished: list[str] = []

    async def slow(received: Received) -> None:
        await asyncio.sleep(0.3)
        await received.ack()
        finished.append(received.message.message_id)

    inbox = Inbox(slow)
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=2)
    await broker.publish(EMAIL_QUEUE, first := a_message(1))
    await broker.publish(EMAIL_QUEUE, second := a_message(2))
    await inbox.next()
    await inbox.next()
    await broker.stop_consuming()
    assert sorted(finished) == sorted([first.message_id, second.message_id]), "both finished before it returned"
    await broker.publish(EMAIL_QUEUE, a_message(3))
    await inbox.nothing_more()
    assert await broker.queue_depth(EMAIL_QUEUE) == 1, "no longer consuming"


async def test_stop_consuming_after_its_timeout_cancels_the_handlers_and_requeues(broker: Broker) -> None:
    inbox = Inbox(hang)
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=1)
    await broker.publish(EMAIL_QUEUE, sent := a_message())
    await inbox.next()
    started_at = time.monotonic()
    await broker.stop_consuming(timeout_s=0.2)
    assert time.monotonic() - started_at < 2
    await depth_is(broker, EMAIL_QUEUE, 1)
    again = Inbox()
    await broker.consume(EMAIL_QUEUE, again, prefetch=1)
    back = await again.next()
    assert (back.message, back.redelivered, back.delivery_count) == (sent, True, 1)


async def test_requeue_gives_the_message_back_for_another_delivery(broker: Broker) -> None:
    inbox = Inbox(lambda received: received.requeue() if received.delivery_count == 0 else received.ack())
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=1)
    await broker.publish(EMAIL_QUEUE, sent := a_message())
    await inbox.next()
    back = await inbox.next()
    assert (back.message, back.redelivered, back.delivery_count) == (sent, True, 1)


async def test_a_message_is_settled_once(broker: Broker) -> None:
    outcomes: asyncio.Queue[BaseException | None] = asyncio.Queue()

    async def twice(received: Received) -> None:
        await received.ack()
        try:
            await received.dead_letter("again")
        except BrokerError as exc:
            outcomes.put_nowait(exc)
        else:
            outcomes.put_nowait(None)

    await broker.consume(EMAIL_QUEUE, Inbox(twice), prefetch=1)
    await broker.publish(EMAIL_QUEUE, a_message())
    assert isinstance(await asyncio.wait_for(outcomes.get(), WAIT_S), BrokerError)
    assert await broker.queue_depth(FAILED_QUEUE) == 0


async def test_names_that_are_not_queues_are_refused(broker: Broker) -> None:
    for name in ("chat.queue", FAILED_QUEUE, TOPOLOGY.retry_queue(EMAIL_QUEUE, 1), ""):
        with pytest.raises(ValueError, match="cannot publish"):
            await broker.publish(name, a_message())
    with pytest.raises(ValueError, match="cannot consume"):
        await broker.consume(TOPOLOGY.retry_queue(EMAIL_QUEUE, 1), Inbox(), prefetch=1)
    with pytest.raises(ValueError, match="prefetch"):
        await broker.consume(EMAIL_QUEUE, Inbox(), prefetch=0)
    with pytest.raises(ValueError, match="unknown queue"):
        await broker.queue_depth("chat.queue")
    with pytest.raises(ValueError, match="message_id"):
        await broker.publish(EMAIL_QUEUE, Message("", b"{}"))
    with pytest.raises(ValueError, match="the broker's own"):
        await broker.publish(EMAIL_QUEUE, Message("d1", b"{}", {"x-delivery-count": "0"}))


async def test_a_message_from_failed_queue_cannot_be_retried(broker: Broker) -> None:
    await broker.consume(EMAIL_QUEUE, Inbox(lambda received: received.dead_letter("bad")), prefetch=1)
    await broker.publish(EMAIL_QUEUE, a_message())
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def retry(received: Received) -> None:
        try:
            await received.retry(1)
        except ValueError as exc:
            outcome.set_result(exc)
            await received.ack()

    await broker.consume(FAILED_QUEUE, retry, prefetch=1)
    assert isinstance(await asyncio.wait_for(outcome, WAIT_S), ValueError)


async def test_connect_twice_is_harmless(broker: Broker) -> None:
    await broker.connect()
    await broker.connect()
    inbox = Inbox()
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=1)
    await broker.publish(EMAIL_QUEUE, sent := a_message())
    assert (await inbox.next()).message == sent


async def test_publishing_after_close_is_unavailable(broker: Broker) -> None:
    await broker.close()
    with pytest.raises(BrokerUnavailable):
        await broker.publish(EMAIL_QUEUE, a_message())


# --- helpers that need no broker --------------------------------------------------------------------------------


def test_a_delay_waits_in_the_smallest_tier_at_least_as_long_or_the_largest() -> None:
    assert [retry_tier_s(d) for d in (0, 1, 1.5, 5, 29, 3600, 10**6)] == [1, 1, 5, 5, 30, 3600, 3600]
    assert TOPOLOGY.retry_queue(EMAIL_QUEUE, 30) == "retry.email.queue.30s"


async def test_create_broker_picks_the_implementation_by_url() -> None:
    assert isinstance(create_broker(None, topology=TOPOLOGY), InMemoryBroker)
    rabbit = create_broker("amqp://guest:guest@127.0.0.1:5672/", topology=TOPOLOGY, namespace="x", delivery_limit=5)
    assert isinstance(rabbit, RabbitMQBroker)
    assert rabbit.name(EMAIL_QUEUE) == "x.email.queue"
    with pytest.raises(ValueError, match="amqp"):
        create_broker("redis://127.0.0.1:6379/0", topology=TOPOLOGY)


async def test_the_un_namespaced_topology_is_never_deleted() -> None:
    with pytest.raises(BrokerError, match="refusing"):
        await RabbitMQBroker("amqp://guest:guest@127.0.0.1:1/", topology=TOPOLOGY).delete_topology()


# --- RabbitMQ's own duties -------------------------------------------------------------------------------------


async def test_rabbitmq_messages_are_persistent_with_the_delivery_id_and_content_type(
    make_rabbitmq_broker: BrokerFactory, rabbitmq_admin: aio_pika.abc.AbstractConnection, namespace: str
) -> None:
    broker = await make_rabbitmq_broker()
    await broker.publish(EMAIL_QUEUE, sent := a_message())
    channel = await rabbitmq_admin.channel()
    queue = await channel.get_queue(f"{namespace}.{EMAIL_QUEUE}")
    raw = await queue.get(timeout=WAIT_S)
    assert raw.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert (raw.message_id, raw.body, raw.content_type) == (sent.message_id, sent.body, sent.content_type)
    assert {k: v for k, v in raw.headers.items() if k != "x-delivery-count"} == dict(sent.headers)
    await raw.nack(requeue=True)


async def test_rabbitmq_topology_is_declared_with_exactly_these_arguments(
    make_rabbitmq_broker: BrokerFactory, rabbitmq_admin: aio_pika.abc.AbstractConnection, namespace: str
) -> None:
    await make_rabbitmq_broker()
    at_least_once = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    expected: dict[str, dict[str, Any]] = {
        FAILED_QUEUE: {"x-queue-type": "quorum"},
        EMAIL_QUEUE: {
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": f"{namespace}.clarion.dlx",
            "x-dead-letter-routing-key": FAILED_QUEUE,
            **at_least_once,
        },
        "retry.push.queue.30s": {
            "x-queue-type": "quorum",
            "x-message-ttl": 30_000,
            "x-dead-letter-exchange": f"{namespace}.clarion.deliveries",
            "x-dead-letter-routing-key": PUSH_QUEUE,
            **at_least_once,
        },
    }

    async def declare(queue: str, arguments: dict[str, Any]) -> None:
        channel = await rabbitmq_admin.channel()
        try:
            await channel.declare_queue(f"{namespace}.{queue}", durable=True, arguments=arguments)
        finally:
            if not channel.is_closed:
                await channel.close()

    # RabbitMQ refuses to declare an existing queue with different arguments (PRECONDITION_FAILED), so a declare
    # that passes proves these are the queue's arguments, and one that fails proves the argument is checked.
    for queue, arguments in expected.items():
        await declare(queue, arguments)
        for changed in ({"x-queue-type": "classic"}, {"x-delivery-limit": 1000}, {"x-dead-letter-exchange": "x"}):
            with pytest.raises(ChannelPreconditionFailed):
                await declare(queue, {**arguments, **changed})
    for exchange in ("clarion.deliveries", "clarion.retry", "clarion.dlx"):
        channel = await rabbitmq_admin.channel()
        await channel.declare_exchange(f"{namespace}.{exchange}", aio_pika.ExchangeType.DIRECT, durable=True)
        await channel.close()


async def test_rabbitmq_an_unroutable_publish_raises_instead_of_vanishing(
    make_rabbitmq_broker: BrokerFactory, rabbitmq_admin: aio_pika.abc.AbstractConnection, namespace: str
) -> None:
    broker = await make_rabbitmq_broker()
    channel = await rabbitmq_admin.channel()
    await channel.queue_delete(f"{namespace}.{EMAIL_QUEUE}")
    with pytest.raises(Unroutable):
        await broker.publish(EMAIL_QUEUE, a_message())
    with pytest.raises(BrokerError, match="does not exist"):
        await broker.queue_depth(EMAIL_QUEUE)
    # connect() declares the topology again.
    await broker.connect()
    await broker.publish(EMAIL_QUEUE, a_message())
    assert await broker.queue_depth(EMAIL_QUEUE) == 1


async def test_rabbitmq_on_a_closed_port_is_unavailable_at_once() -> None:
    broker = RabbitMQBroker(f"amqp://guest:guest@127.0.0.1:{free_port()}/", topology=TOPOLOGY, connect_timeout_s=2)
    started_at = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await broker.connect()
    with pytest.raises(BrokerUnavailable):
        await broker.publish(EMAIL_QUEUE, a_message())
    assert time.monotonic() - started_at < 2.5
    await broker.close()


async def test_rabbitmq_that_never_answers_is_unavailable_within_the_connect_timeout(
    silent_port: int,
) -> None:
    broker = RabbitMQBroker(f"amqp://guest:guest@127.0.0.1:{silent_port}/", topology=TOPOLOGY, connect_timeout_s=0.5)
    started_at = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await broker.connect()
    assert time.monotonic() - started_at < 1.5
    await broker.close()


async def test_rabbitmq_unacked_messages_come_back_when_the_consumer_goes_away(
    make_rabbitmq_broker: BrokerFactory,
) -> None:
    first = await make_rabbitmq_broker()
    held = Inbox(hang)
    await first.consume(EMAIL_QUEUE, held, prefetch=2)
    await first.publish(EMAIL_QUEUE, one := a_message(1))
    await first.publish(EMAIL_QUEUE, two := a_message(2))
    await held.next()
    await held.next()
    await first.close()  # no ack, no nack: RabbitMQ requeues what the connection held

    second = await make_rabbitmq_broker()
    inbox = Inbox()
    await second.consume(EMAIL_QUEUE, inbox, prefetch=2)
    back = [await inbox.next(), await inbox.next()]
    assert sorted(r.message.message_id for r in back) == sorted([one.message_id, two.message_id])
    assert all(r.redelivered and r.delivery_count == 1 for r in back)


async def test_rabbitmq_a_stalled_connection_bounds_publish_by_the_timeout(
    proxy: Proxy, make_rabbitmq_broker: BrokerFactory
) -> None:
    broker = await make_rabbitmq_broker(url=proxy.url, publish_timeout_s=0.5)
    await broker.publish(EMAIL_QUEUE, a_message(1))
    proxy.stall()
    started_at = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="not confirmed within"):
        await broker.publish(EMAIL_QUEUE, a_message(2))
    assert time.monotonic() - started_at < 1.5


async def test_rabbitmq_after_a_dropped_connection_it_reconnects_redeclares_and_consumes_again(
    proxy: Proxy,  # first: set up before the brokers, so torn down after them
    make_rabbitmq_broker: BrokerFactory,
    rabbitmq_admin: aio_pika.abc.AbstractConnection,
    namespace: str,
) -> None:
    broker = await make_rabbitmq_broker(url=proxy.url + "?reconnect_interval=0.2", publish_timeout_s=1)
    inbox = Inbox()
    await broker.consume(EMAIL_QUEUE, inbox, prefetch=1)
    await broker.publish(EMAIL_QUEUE, a_message(1))
    await inbox.next()
    proxy.refuse()
    await proxy.drop()
    with pytest.raises(BrokerUnavailable):
        await broker.publish(EMAIL_QUEUE, a_message(2))
    # While it is away, the topology disappears (as on a RabbitMQ that lost its data).
    channel = await rabbitmq_admin.channel()
    await channel.queue_delete(f"{namespace}.{EMAIL_QUEUE}")
    await channel.exchange_delete(f"{namespace}.clarion.deliveries")
    proxy.accept()

    async def published() -> bool:
        with contextlib.suppress(BrokerUnavailable):
            await broker.publish(EMAIL_QUEUE, sent)
            return True
        return False

    sent = a_message(3)
    await eventually(published)
    assert (await inbox.next()).message == sent


# --- a TCP proxy in front of RabbitMQ, to stall or drop the connection without touching the server ----------------


class Proxy:
    """Relays 127.0.0.1:<port> to RabbitMQ. `stall()` stops relaying (a wedged network), `refuse()` closes new
    connections at once, `drop()` closes the open ones (a broken network), `accept()` relays again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._relaying = asyncio.Event()
        self._relaying.set()
        self._accepting = True
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stall(self) -> None:
        self._relaying.clear()

    def refuse(self) -> None:
        self._accepting = False

    def accept(self) -> None:
        self._accepting = True

    async def drop(self) -> None:
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        self._relaying.set()
        await self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if not self._accepting:
            client_writer.close()
            return
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_writer, server_writer]
        await asyncio.gather(
            self._pipe(client_reader, server_writer),
            self._pipe(server_reader, client_writer),
            return_exceptions=True,
        )
        for writer in (client_writer, server_writer):
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._relaying.wait()
            writer.write(data)
            await writer.drain()


@pytest.fixture
async def proxy(rabbitmq_url: str) -> AsyncIterator[Proxy]:
    port = URL(rabbitmq_url).port or 5672
    relay = Proxy(port)
    await relay.start()
    yield relay
    await relay.close()


async def test_connected_says_whether_the_broker_is_reachable(make_broker: BrokerFactory) -> None:
    # What a worker's readiness answers: not ready before it connects, nor after it closes.
    broker = await make_broker()
    assert broker.connected
    await broker.close()
    assert not broker.connected


async def test_a_broker_that_never_reached_rabbitmq_is_not_connected() -> None:
    broker = RabbitMQBroker(f"amqp://guest:guest@127.0.0.1:{free_port()}/", topology=TOPOLOGY, connect_timeout_s=1)
    with pytest.raises(BrokerUnavailable):
        await broker.connect()
    assert not broker.connected
