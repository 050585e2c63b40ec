"""Nothing is lost under faults: Clarion as real processes on real PostgreSQL and RabbitMQ while workers are
SIGKILLed, RabbitMQ and PostgreSQL restart, the provider misbehaves and a poison message arrives. For each: lost
(accepted, never terminal) = 0, unexpected (received, never accepted) = 0, duplicates within the stated bound, and
every notification terminal within the deadline.

The restarts act on this machine's own RabbitMQ and PostgreSQL (the ones the tests use), so the suite runs alone,
never alongside another test run."""

from __future__ import annotations

import asyncio
import collections
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from clarion.core.broker import EMAIL_QUEUE, FAILED_QUEUE, Broker, Message, create_broker
from clarion.core.db import upgrade_database
from tests.chaos.harness import Misbehaviour, Outcome, check, running_clarion, send_load
from tests.conftest import unavailable
from tests.e2e.test_workers_as_processes import _cleanup
from tests.integration.conftest import RABBITMQ_URL

pytestmark = pytest.mark.chaos
T = TypeVar("T")

# Every accepted notification must be terminal this long after the load ends.
DEADLINE_S = 120
# Workers have this many messages in flight; a SIGKILLed one can have sent each of them without committing.
PREFETCH = 8


@pytest.fixture
def database(make_database: Callable[[], str]) -> str:
    url = make_database()
    upgrade_database(url)
    return url


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    yield name
    asyncio.run(_cleanup(name))


def run(command: list[str], *, timeout_s: float = 120) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


def restart_rabbitmq() -> None:
    """Stop and start the broker application: every connection drops, the durable queues come back from disk."""
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl", "not installed: the RabbitMQ restart cannot be done")
    run(["rabbitmqctl", "stop_app"])
    time.sleep(1)
    run(["rabbitmqctl", "start_app"])
    run(["rabbitmqctl", "await_startup"])


def restart_postgresql() -> None:
    """Restart the cluster the tests use (fast shutdown: sessions are cut off, as in a crash or a failover)."""
    if shutil.which("pg_lsclusters") is None:
        unavailable("pg_ctlcluster", "not installed: the PostgreSQL restart cannot be done")
    version, name = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    ).stdout.split()[:2]
    run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart", "-m", "fast"])


def report(outcome: Outcome, **figures: object) -> None:
    print(  # noqa: T201 - the run's figures, shown with -s or -rA
        f"statuses={dict(outcome.statuses)} lost={len(outcome.lost)} unexpected={len(outcome.unexpected)} "
        f"duplicates={outcome.duplicates} " + " ".join(f"{k}={v}" for k, v in figures.items())
    )


def assert_nothing_lost(outcome: Outcome, *, accepted: int) -> None:
    assert outcome.lost == [], f"{len(outcome.lost)} accepted notifications never finished"
    assert outcome.unexpected == [], "the provider received deliveries nobody accepted"
    assert sum(outcome.statuses.values()) == accepted


def test_workers_killed_every_few_seconds_and_a_rabbitmq_restart_lose_nothing(
    database: str, namespace: str, tmp_path: Path
) -> None:
    count = 2000
    prefetch = {"CLARION_WORKER_PREFETCH": str(PREFETCH)}
    with running_clarion(database, namespace, tmp_path, email_workers=2, users=50, settings=prefetch) as run:
        done, restarted = threading.Event(), threading.Event()

        def havoc() -> None:
            """Kill an email worker every 2 s, alternating; restart RabbitMQ once, a few seconds in."""
            turn = 0
            while not done.wait(2.0) and turn < 30:
                run.system.kill_and_replace(f"email-{turn % 2}")
                turn += 1
                if turn == 2:
                    restart_rabbitmq()
                    restarted.set()

        chaos = threading.Thread(target=havoc, name="havoc")
        chaos.start()
        try:
            accepted = asyncio.run(send_load(run.system.address, run.users, count=count))
            # Keep killing until the provider has seen most of the work, so kills land mid-delivery.
            deadline = time.monotonic() + 60
            while len(run.provider.receipts) < count * 0.9 and time.monotonic() < deadline:
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


def test_a_postgresql_restart_under_load_loses_nothing(database: str, namespace: str, tmp_path: Path) -> None:
    count = 1000
    retried: collections.Counter[str] = collections.Counter()
    with running_clarion(database, namespace, tmp_path, email_workers=1) as run:
        restarter = threading.Timer(1.5, restart_postgresql)
        restarter.start()
        try:
            accepted = asyncio.run(send_load(run.system.address, run.users, count=count, retried=retried))
        finally:
            restarter.join(timeout=120)
        outcome = asyncio.run(check(database, accepted, run.provider.receipts, deadline_s=DEADLINE_S))
    report(outcome, retried=dict(retried))
    # The restart hit the load: the accepting calls it cut short answered UNAVAILABLE (never INTERNAL), and were
    # retried with their keys.
    assert retried["UNAVAILABLE"] > 0
    assert_nothing_lost(outcome, accepted=count)
    assert outcome.statuses["sent"] == count
    # No worker was killed: a send whose outcome could not be committed (the database was away) is the only way
    # to send twice, and a restart takes a moment, not the whole run.
    assert outcome.duplicates <= PREFETCH * 2
    assert set(run.exit_codes.values()) == {0}, run.exit_codes


def test_a_provider_with_503s_slow_answers_and_429_storms_loses_nothing(
    database: str, namespace: str, tmp_path: Path
) -> None:
    count = 1000
    misbehaviour = Misbehaviour(error_rate=0.3, slow_rate=0.03, slow_s=1.5)
    with running_clarion(database, namespace, tmp_path, email_workers=2, misbehaviour=misbehaviour) as run:

        def storms() -> None:
            for _ in range(2):  # two storms of 429s with Retry-After, 3 s each
                time.sleep(2)
                misbehaviour.storm.set()
                time.sleep(3)
                misbehaviour.storm.clear()

        storm = threading.Thread(target=storms, name="storms")
        storm.start()
        accepted = asyncio.run(send_load(run.system.address, run.users, count=count))
        storm.join(timeout=60)
        outcome = asyncio.run(check(database, accepted, run.provider.receipts, deadline_s=DEADLINE_S * 2))
    report(outcome, slow_accepts=run.provider.slow_accepts)
    assert_nothing_lost(outcome, accepted=count)
    # A delivery fails only after every attempt met a failure (0.3^5 of them, a handful of 1,000).
    assert all(attempts == 5 for attempts in outcome.failed_attempts), outcome.failed_attempts
    assert outcome.statuses["sent"] + outcome.statuses["failed"] == count
    assert outcome.statuses["failed"] <= count * 0.02
    # A slow answer is accepted after the worker gave up and retried: each one may be a duplicate, nothing else.
    assert outcome.duplicates <= run.provider.slow_accepts
    assert set(run.exit_codes.values()) == {0}, run.exit_codes


async def _on_broker(namespace: str, action: Callable[[Broker], Awaitable[T]]) -> T:
    """`action` on a connection of our own to the run's RabbitMQ namespace."""
    broker = create_broker(RABBITMQ_URL, namespace=namespace)
    await broker.connect()
    try:
        return await action(broker)
    finally:
        await broker.close()


def test_one_poison_message_among_a_thousand(database: str, namespace: str, tmp_path: Path) -> None:
    count = 1000
    poison = Message(message_id="poison", body=b"\x00\xffnot json{", headers={})
    with running_clarion(database, namespace, tmp_path, email_workers=1) as run:

        async def load() -> list[str]:
            first = await send_load(run.system.address, run.users, count=count // 2)
            await _on_broker(namespace, lambda broker: broker.publish(EMAIL_QUEUE, poison))
            return first + await send_load(run.system.address, run.users, count=count - count // 2)

        accepted = asyncio.run(load())
        outcome = asyncio.run(check(database, accepted, run.provider.receipts, deadline_s=DEADLINE_S))
        parked = asyncio.run(_on_broker(namespace, lambda broker: broker.queue_depth(FAILED_QUEUE)))
        alive = run.system.alive()
    report(outcome, dead_lettered=parked)
    assert_nothing_lost(outcome, accepted=count)
    assert outcome.statuses["sent"] == count
    assert outcome.duplicates == 0
    assert parked == 1, "the poison message is set aside in failed.queue, once"
    assert all(code is None for code in alive.values()), f"no process died of it: {alive}"
    assert set(run.exit_codes.values()) == {0}, run.exit_codes
