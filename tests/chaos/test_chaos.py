"""Nothing is lost under faults: Clarion as real processes on a PostgreSQL server and a RabbitMQ node of the suite's
own (tests.chaos.infra; the machine's services are never touched), while workers are SIGKILLed, RabbitMQ and
PostgreSQL go away for seconds or half a minute, the provider misbehaves and a poison message arrives. For each:
lost = 0 (accepted and unknown to the database, or SENT without a receipt), stuck = 0 (not terminal by the
deadline), unexpected = 0 (received, never accepted), and every duplicate receipt matched by an attempt that
succeeded or whose outcome is unknown (docs/delivery-guarantees.md)."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest

from clarion.core.broker import Broker, Message, create_broker
from clarion.core.db import asyncpg_dsn, upgrade_database
from clarion.delivery.queues import EMAIL_QUEUE, FAILED_QUEUE, TOPOLOGY
from tests.chaos.harness import Outcome, Run, check, every_receipt, running_clarion, send_load
from tests.chaos.infra import ChaosPostgres, ChaosRabbitMQ
from tests.chaos.provider import Misbehaviour

pytestmark = pytest.mark.chaos
T = TypeVar("T")

# Every accepted notification must be terminal this long after the load ends.
DEADLINE_S = 120
# Workers have this many messages in flight; a SIGKILLed one can have sent each of them without committing.
PREFETCH = 8


@pytest.fixture(scope="module")
def postgres() -> Iterator[ChaosPostgres]:
    server = ChaosPostgres()  # removes its folder itself if initdb fails
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[ChaosRabbitMQ]:
    node = ChaosRabbitMQ()
    try:
        node.start()
        yield node
    finally:
        node.remove()


@pytest.fixture
def database(postgres: ChaosPostgres) -> str:
    name = f"chaos_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        connection = await asyncpg.connect(asyncpg_dsn(postgres.url))
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create())
    url = postgres.url.rsplit("/", 1)[0] + f"/{name}"
    upgrade_database(url)
    return url


@pytest.fixture
def namespace() -> str:
    # The node is the suite's own and goes at the end: nothing to clean up per test.
    return f"chaos-{uuid.uuid4().hex[:8]}"


def report(outcome: Outcome, **figures: object) -> None:
    print(  # noqa: T201 - the run's figures, shown with -s or -rA
        f"statuses={dict(outcome.statuses)} lost={len(outcome.lost)} stuck={len(outcome.stuck)} "
        f"unexpected={len(outcome.unexpected)} duplicates={outcome.duplicates} "
        f"unexplained={len(outcome.unexplained)} unknown_attempts={outcome.unknown_attempts} "
        + " ".join(f"{k}={v}" for k, v in figures.items())
    )


def assert_nothing_lost(outcome: Outcome, *, accepted: int) -> None:
    assert outcome.lost == [], f"{len(outcome.lost)} accepted notifications lost"
    assert outcome.stuck == [], f"{len(outcome.stuck)} accepted notifications never finished"
    assert outcome.unexpected == [], "the provider received deliveries nobody accepted"
    assert outcome.unexplained == [], "a delivery was received more often than it has attempts that may have sent"
    assert sum(outcome.statuses.values()) == accepted


@dataclass
class Outage:
    """A thread that waits until `when()` (at most a minute), stops a service, waits `for_s` and starts it again;
    `began` is set once the service is stopped."""

    thread: threading.Thread
    began: threading.Event


def outage(stop: Callable[[], None], start: Callable[[], None], *, when: Callable[[], bool], for_s: float) -> Outage:
    began = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + 60
        while not when() and time.monotonic() < deadline:
            time.sleep(0.05)
        stop()
        began.set()
        time.sleep(for_s)
        start()

    thread = threading.Thread(target=run, name="outage")
    thread.start()
    return Outage(thread, began)


def load_through(run: Run, count: int, fault: Outage) -> tuple[list[str], collections.Counter[str]]:
    """`count` notifications, half before the fault and half once it has begun (retried while the server is
    away); returns the accepted ids and the retries by code, once the fault is over."""
    retried: collections.Counter[str] = collections.Counter()
    try:
        accepted = asyncio.run(send_load(run.system.address, run.users, count=count // 2, retried=retried))
        assert fault.began.wait(timeout=90), "the fault began"
        rest = count - count // 2
        accepted += asyncio.run(send_load(run.system.address, run.users, count=rest, retried=retried))
    finally:
        fault.thread.join(timeout=180)
    assert not fault.thread.is_alive(), "the fault ended"
    return accepted, retried


def test_workers_killed_every_second_and_a_rabbitmq_restart_lose_nothing(
    database: str, rabbitmq: ChaosRabbitMQ, namespace: str, tmp_path: Path
) -> None:
    count = 1200
    prefetch = {"CLARION_WORKER_PREFETCH": str(PREFETCH)}
    with running_clarion(
        database, rabbitmq.url, namespace, tmp_path, email_workers=2, users=50, settings=prefetch
    ) as run:
        done, restarted = threading.Event(), threading.Event()

        def havoc() -> None:
            """Once deliveries flow, kill an email worker every second, alternating; restart RabbitMQ once, after
            the third kill."""
            while len(run.provider.receipts()) < 50 and not done.wait(0.1):
                pass
            turn = 0
            while not done.wait(1.0) and turn < 30:
                run.system.kill_and_replace(f"email-{turn % 2}")
                turn += 1
                if turn == 3:
                    rabbitmq.stop_app()
                    time.sleep(1)
                    rabbitmq.start_app()
                    restarted.set()

        chaos = threading.Thread(target=havoc, name="havoc")
        chaos.start()
        try:
            accepted = asyncio.run(send_load(run.system.address, run.users, count=count))
            # Keep killing until the provider has seen most of the work, so kills land mid-delivery.
            deadline = time.monotonic() + 60
            while len(run.provider.receipts()) < count * 0.9 and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            done.set()
            chaos.join(timeout=120)
        assert restarted.is_set(), "RabbitMQ was restarted during the run"
        outcome = asyncio.run(check(database, accepted, run.provider.receipts, deadline_s=DEADLINE_S))
    report(outcome, kills=run.system.kills)
    assert_nothing_lost(outcome, accepted=count)
    assert outcome.statuses["sent"] == count
    # A duplicate needs a send that succeeded in a worker killed before it committed: at most its prefetch a kill.
    assert outcome.duplicates <= run.system.kills * PREFETCH
    assert set(run.exit_codes.values()) == {0}, f"every process drains and exits cleanly at the end: {run.exit_codes}"


@pytest.mark.parametrize("down_s", [5, 30])
def test_postgresql_down_under_load_loses_nothing(
    database: str, postgres: ChaosPostgres, rabbitmq: ChaosRabbitMQ, namespace: str, tmp_path: Path, down_s: int
) -> None:
    count = 500
    with running_clarion(database, rabbitmq.url, namespace, tmp_path, email_workers=1) as run:
        # Mid-delivery: the workers have messages in flight when the database goes.
        fault = outage(postgres.stop, postgres.start, when=lambda: len(run.provider.receipts()) >= 100, for_s=down_s)
        accepted, retried = load_through(run, count, fault)
        outcome = asyncio.run(check(database, accepted, run.provider.receipts, deadline_s=DEADLINE_S))
        parked = asyncio.run(_on_broker(rabbitmq.url, namespace, lambda broker: broker.queue_depth(FAILED_QUEUE)))
    report(outcome, retried=dict(retried), dead_lettered=parked)
    # The outage hit the load: the accepts sent while it lasted answered UNAVAILABLE (never INTERNAL), and were
    # retried with their keys.
    assert retried["UNAVAILABLE"] > 0
    assert_nothing_lost(outcome, accepted=count)
    assert outcome.statuses["sent"] == count
    assert parked == 0, "no message left for failed.queue while the database was away"
    assert set(run.exit_codes.values()) == {0}, run.exit_codes


def test_rabbitmq_down_for_30_s_under_load_loses_nothing(
    database: str, rabbitmq: ChaosRabbitMQ, namespace: str, tmp_path: Path
) -> None:
    count = 500
    with running_clarion(database, rabbitmq.url, namespace, tmp_path, email_workers=2) as run:
        fault = outage(
            rabbitmq.stop_app, rabbitmq.start_app, when=lambda: len(run.provider.receipts()) >= 100, for_s=30
        )
        accepted, _ = load_through(run, count, fault)
        outcome = asyncio.run(check(database, accepted, run.provider.receipts, deadline_s=DEADLINE_S))
    report(outcome)
    assert_nothing_lost(outcome, accepted=count)
    assert outcome.statuses["sent"] == count
    assert set(run.exit_codes.values()) == {0}, run.exit_codes


def test_a_provider_with_503s_slow_answers_and_429_storms_loses_nothing(
    database: str, rabbitmq: ChaosRabbitMQ, namespace: str, tmp_path: Path
) -> None:
    count = 1000
    misbehaviour = Misbehaviour(error_rate=0.3, slow_rate=0.03, slow_s=3)
    # Slow answers come after the workers gave up (1 s), as a provider's do; the lease stays well above that.
    timeouts = {"CLARION_PROVIDER_TIMEOUT_S": "1", "CLARION_DELIVERY_LEASE_S": "10"}
    with running_clarion(
        database, rabbitmq.url, namespace, tmp_path, email_workers=2, misbehaviour=misbehaviour, settings=timeouts
    ) as run:

        def storms() -> None:
            for _ in range(2):  # two storms of 429s with Retry-After, 3 s each
                time.sleep(2)
                run.provider.storm(True)
                time.sleep(3)
                run.provider.storm(False)

        storm = threading.Thread(target=storms, name="storms")
        storm.start()
        accepted = asyncio.run(send_load(run.system.address, run.users, count=count))
        storm.join(timeout=60)
        outcome = asyncio.run(check(database, accepted, run.provider.receipts, deadline_s=DEADLINE_S * 2))
        slow_accepts = run.provider.slow_accepts()
    report(outcome, slow_accepts=slow_accepts)
    assert_nothing_lost(outcome, accepted=count)
    # A delivery fails only after every attempt met a failure (0.3^5 of them, a handful of 1,000).
    assert all(attempts == 5 for attempts in outcome.failed_attempts), outcome.failed_attempts
    assert outcome.statuses["sent"] + outcome.statuses["failed"] == count
    assert outcome.statuses["failed"] <= count * 0.02
    # A slow answer is accepted after the worker gave up (an unknown outcome) and retried: each may be a duplicate.
    # So may an ordinary answer that a busy machine delays past the 1 s timeout: every duplicate needs an unknown
    # attempt (assert_nothing_lost checks them delivery by delivery), however many the slow accepts were.
    assert outcome.duplicates <= outcome.unknown_attempts
    assert set(run.exit_codes.values()) == {0}, run.exit_codes


async def _on_broker(url: str, namespace: str, action: Callable[[Broker], Awaitable[T]]) -> T:
    """`action` on a connection of our own to the run's RabbitMQ namespace."""
    broker = create_broker(url, topology=TOPOLOGY, namespace=namespace)
    await broker.connect()
    try:
        return await action(broker)
    finally:
        await broker.close()


def test_one_poison_message_among_six_hundred(
    database: str, rabbitmq: ChaosRabbitMQ, namespace: str, tmp_path: Path
) -> None:
    count = 600
    poison = Message(message_id="poison", body=b"\x00\xffnot json{", headers={})
    with running_clarion(database, rabbitmq.url, namespace, tmp_path, email_workers=1) as run:

        async def load() -> list[str]:
            first = await send_load(run.system.address, run.users, count=count // 2)
            await _on_broker(rabbitmq.url, namespace, lambda broker: broker.publish(EMAIL_QUEUE, poison))
            return first + await send_load(run.system.address, run.users, count=count - count // 2)

        accepted = asyncio.run(load())
        outcome = asyncio.run(check(database, accepted, run.provider.receipts, deadline_s=DEADLINE_S))
        parked = asyncio.run(_on_broker(rabbitmq.url, namespace, lambda broker: broker.queue_depth(FAILED_QUEUE)))
        alive = run.system.alive()
    report(outcome, dead_lettered=parked)
    assert_nothing_lost(outcome, accepted=count)
    assert outcome.statuses["sent"] == count
    assert outcome.duplicates == 0
    assert parked == 1, "the poison message is set aside in failed.queue, once"
    assert all(code is None for code in alive.values()), f"no process died of it: {alive}"
    assert set(run.exit_codes.values()) == {0}, run.exit_codes


def test_sms_and_in_app_workers_killed_every_second_lose_nothing(
    database: str, rabbitmq: ChaosRabbitMQ, namespace: str, tmp_path: Path
) -> None:
    """Every notification goes out by email, SMS and in-app, while Twilio answers 503 to a tenth of the texts and
    the SMS and in-app workers are SIGKILLed in turn, twice a second."""
    count = 900
    prefetch = {"CLARION_WORKER_PREFETCH": str(PREFETCH)}
    with running_clarion(
        database,
        rabbitmq.url,
        namespace,
        tmp_path,
        email_workers=1,
        channel_workers={"sms": 2, "in_app": 2},
        users=30,
        misbehaviour=Misbehaviour(error_rate=0.1),
        settings=prefetch,
    ) as run:
        done = threading.Event()

        def havoc() -> None:
            while not run.provider.sms_receipts() and not done.wait(0.05):
                pass
            turn = 0
            while not done.wait(0.5) and turn < 40:
                run.system.kill_and_replace(["sms-0", "in_app-0", "sms-1", "in_app-1"][turn % 4])
                turn += 1

        chaos = threading.Thread(target=havoc, name="havoc")
        chaos.start()
        try:
            accepted = asyncio.run(send_load(run.system.address, run.users, count=count))
            deadline = time.monotonic() + 60
            while len(run.provider.sms_receipts()) < count * 0.9 and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            done.set()
            chaos.join(timeout=120)

        async def receipts() -> collections.Counter[str]:
            return await every_receipt(database, accepted, run.provider)

        outcome = asyncio.run(check(database, accepted, receipts, deadline_s=DEADLINE_S))
    report(outcome, kills=run.system.kills)
    assert run.system.kills > 0, "workers were killed mid-work"
    assert_nothing_lost(outcome, accepted=count)
    assert outcome.statuses["sent"] == count
    assert outcome.duplicates <= run.system.kills * PREFETCH
    assert set(run.exit_codes.values()) == {0}, f"every process drains and exits cleanly at the end: {run.exit_codes}"
