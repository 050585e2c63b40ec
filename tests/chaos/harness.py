"""The chaos suite's pieces: Clarion as real processes under a small supervisor, a SendGrid stand-in in a process of
its own (tests.chaos.provider), a load generator that retries the way a careful client does, and the checker that
counts what was lost, what got stuck, what was unexpected, and which duplicate has no recorded cause."""

from __future__ import annotations

import asyncio
import collections
import inspect
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from clarion.core.db import asyncpg_dsn
from clarion.delivery.lifecycle import AttemptOutcome, DeliveryStatus
from clarion.v1 import (
    notifications_pb2,
    notifications_pb2_grpc,
    templates_pb2,
    templates_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from tests.chaos.provider import API_KEY, TWILIO_SID, TWILIO_TOKEN, Misbehaviour, ProviderProcess
from tests.conftest import free_port
from tests.e2e.conftest import wait_until_serving

BIN = Path(sys.executable).parent
TERMINAL = ("sent", "partially_sent", "failed", "skipped", "cancelled")
# What a careful client retries, with the same idempotency key: the server is away, not the request wrong.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


class Supervisor:
    """Clarion's processes: `serve all`, the dispatcher, the sweeper, `email_workers` email workers and the
    `channel_workers` of other channels (`{"sms": 1}`: a process named `sms-0`), each a real `clarion` process.
    Workers can be SIGKILLed and replaced; everything is stopped at the end."""

    def __init__(
        self, env: dict[str, str], folder: Path, *, email_workers: int, channel_workers: dict[str, int] | None = None
    ) -> None:
        self.env = env
        self.folder = folder
        self.address = f"127.0.0.1:{env['CLARION_GRPC_PORT']}"
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.kills = 0
        self._logs: list[object] = []
        self._workers = {"email": email_workers, **(channel_workers or {})}

    def _start(self, name: str, *args: str) -> subprocess.Popen[str]:
        log = (self.folder / f"{name}.log").open("a")
        self._logs.append(log)
        process = subprocess.Popen(
            [str(BIN / "clarion"), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        self.processes[name] = process
        return process

    def start(self) -> None:
        server = self._start("server", "serve", "all")
        wait_until_serving(self.address, server)
        self._start("dispatcher", "worker", "dispatcher")
        self._start("sweeper", "worker", "sweeper")
        for kind, count in self._workers.items():
            for n in range(count):
                self._start(f"{kind}-{n}", "worker", kind)

    def kill_and_replace(self, name: str) -> None:
        """SIGKILL a worker mid-work (no drain, no acks) and start a new one in its place."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        self.kills += 1
        self._start(name, "worker", name.rsplit("-", 1)[0])

    def alive(self) -> dict[str, int | None]:
        return {name: process.poll() for name, process in self.processes.items()}

    def stop(self) -> dict[str, int]:
        """SIGTERM everything; returns each process's exit code (a clean drain is 0)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        for log in self._logs:
            log.close()  # type: ignore[attr-defined]
        return codes


def base_env(database_url: str, broker_url: str, namespace: str, provider_host: str) -> dict[str, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(
        {
            "CLARION_DATABASE_URL": database_url,
            "CLARION_BROKER_URL": broker_url,
            "CLARION_BROKER_NAMESPACE": namespace,
            "CLARION_GRPC_PORT": str(port),
            "CLARION_METRICS_PORT": "0",
            "CLARION_HEALTH_PORT": "0",
            "CLARION_USERS_ADDRESS": f"127.0.0.1:{port}",
            "CLARION_TEMPLATES_ADDRESS": f"127.0.0.1:{port}",
            "CLARION_AUTH_REQUIRED": "false",
            "CLARION_SENDGRID_API_KEY": API_KEY,
            "CLARION_SENDGRID_HOST": provider_host,
            "CLARION_SMS_PROVIDER": "twilio",
            "CLARION_TWILIO_ACCOUNT_SID": TWILIO_SID,
            "CLARION_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "CLARION_TWILIO_FROM_NUMBER": "+15005550006",
            "CLARION_TWILIO_BASE_URL": provider_host,
            # With margin for a loaded machine: a provider answer slower than this is an unknown outcome and a
            # retry (a possible duplicate), so it must mean the provider misbehaved, not that the machine was busy.
            "CLARION_PROVIDER_TIMEOUT_S": "5",
            "CLARION_DELIVERY_LEASE_S": "15",
            "CLARION_SWEEPER_INTERVAL_S": "1",
            # A message lost on the way is published again this long after: well inside the checker's deadline.
            "CLARION_DELIVERY_REPUBLISH_AFTER_S": "20",
            "CLARION_DELIVERY_BACKOFF_BASE_S": "0.25",
            "CLARION_PROVIDER_BREAKER_RESET_S": "2",
            "CLARION_LOG_LEVEL": "warning",
        }
    )
    return env


async def _call_until_answered(
    call: object, request: object, *, deadline: float, retried: collections.Counter[str]
) -> object:
    """A call retried with backoff while the server is away (UNAVAILABLE...), as a careful client does; each retry
    is counted in `retried` by the code that caused it."""
    delay_s = 0.1
    while True:
        try:
            return await call(request, timeout=10)  # type: ignore[operator]
        except grpc.aio.AioRpcError as error:
            if error.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
            retried[error.code().name] += 1
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, 2.0)


async def seed(address: str, *, users: int, every_channel: bool = False) -> list[str]:
    """A template (email only, or `every_channel`: email, SMS and in-app, each text unique to its notification) and
    `users` users with an address and a phone number; returns the users' ids."""
    template = {"template_key": "chaos", "subject": "#{n}", "body": "{n}"}
    if every_channel:
        template |= {"sms_body": "chaos text #{n}", "in_app_title": "#{n}", "in_app_body": "{n}"}
    async with grpc.aio.insecure_channel(address) as channel:
        await templates_pb2_grpc.TemplateServiceStub(channel).CreateTemplate(
            templates_pb2.CreateTemplateRequest(template=template), timeout=10
        )
        stub = users_pb2_grpc.UserServiceStub(channel)
        ids = []
        for n in range(users):
            user = {"email_address": f"chaos-{n}@example.com", "phone_number": f"+1415555{n:04d}"}
            request = users_pb2.CreateUserRequest(user=user)
            ids.append((await stub.CreateUser(request, timeout=10)).user_id)
        return ids


async def send_load(
    address: str,
    users: list[str],
    *,
    count: int,
    concurrency: int = 16,
    retried: collections.Counter[str] | None = None,
) -> list[str]:
    """`count` notifications, `concurrency` at a time, each with its own idempotency key and retried with it while
    the server is away: one notification per key, whatever the retries. Returns the accepted ids; `retried`
    counts the retries by code."""
    retried = collections.Counter() if retried is None else retried
    accepted: list[str] = []
    deadline = time.monotonic() + 240
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    async with grpc.aio.insecure_channel(address) as channel:
        send = notifications_pb2_grpc.NotificationServiceStub(channel).SendNotification

        async def sender() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                request = notifications_pb2.SendNotificationRequest(
                    user_id=users[n % len(users)], template_key="chaos", request_id=f"chaos-{n}-{uuid.uuid4().hex}"
                )
                request.message_data.update({"n": str(n)})
                response = await _call_until_answered(send, request, deadline=deadline, retried=retried)
                accepted.append(response.notification.notification_id)  # type: ignore[attr-defined]

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    return accepted


@dataclass
class Outcome:
    """What the checker found."""

    statuses: collections.Counter[str]
    # Accepted but unknown to the database, or SENT without the provider ever receiving it.
    lost: list[str]
    # Accepted, and still not terminal at the deadline.
    stuck: list[str]
    # Received by the provider, never accepted.
    unexpected: list[str]
    # Receipts beyond the first.
    duplicates: int
    # Deliveries received more often than they have attempts that succeeded or whose outcome is unknown: a
    # duplicate with no recorded cause.
    unexplained: list[str]
    failed_attempts: list[int]
    # Attempts logged with an unknown outcome (a provider timeout, or a lease that expired).
    unknown_attempts: int


_ATTEMPTS = """
SELECT a.delivery_id, count(*) FILTER (WHERE a.outcome IN ($2, $3)) AS may_have_sent,
       count(*) FILTER (WHERE a.outcome = $3) AS unknown
FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE d.notification_id = ANY($1::uuid[])
GROUP BY a.delivery_id
"""


async def check(
    database_url: str,
    accepted: list[str],
    provider_receipts: Callable[[], collections.Counter[str] | Awaitable[collections.Counter[str]]],
    *,
    deadline_s: float,
) -> Outcome:
    """Wait up to `deadline_s` for every accepted notification to be terminal, then account for every receipt the
    provider reports (read once everything is terminal)."""
    ids = [uuid.UUID(i) for i in accepted]
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        deadline = time.monotonic() + deadline_s
        while True:
            rows = await connection.fetch("SELECT id, status FROM notifications WHERE id = ANY($1::uuid[])", ids)
            waiting = [str(r["id"]) for r in rows if r["status"] not in TERMINAL]
            if not waiting or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        statuses = collections.Counter(str(r["status"]) for r in rows)
        missing = {str(i) for i in ids} - {str(r["id"]) for r in rows}
        deliveries = await connection.fetch(
            "SELECT id, status, attempt_count FROM deliveries WHERE notification_id = ANY($1::uuid[])", ids
        )
        attempts = {
            str(r["delivery_id"]): (int(r["may_have_sent"]), int(r["unknown"]))
            for r in await connection.fetch(_ATTEMPTS, ids, AttemptOutcome.SUCCEEDED, AttemptOutcome.UNKNOWN)
        }
    finally:
        await connection.close()
    read = provider_receipts()
    receipts = await read if inspect.isawaitable(read) else read
    known = {str(d["id"]) for d in deliveries}
    never_received = [
        str(d["id"]) for d in deliveries if d["status"] == DeliveryStatus.SENT and not receipts[str(d["id"])]
    ]
    return Outcome(
        statuses=statuses,
        lost=sorted(missing | set(never_received)),
        stuck=sorted(waiting),
        unexpected=sorted(set(receipts) - known),
        duplicates=sum(n - 1 for n in receipts.values()),
        unexplained=sorted(d for d, n in receipts.items() if n > attempts.get(d, (0, 0))[0]),
        failed_attempts=[int(d["attempt_count"]) for d in deliveries if d["status"] == DeliveryStatus.FAILED],
        unknown_attempts=sum(unknown for _, unknown in attempts.values()),
    )


@dataclass
class Run:
    """A running system under test: its processes, the provider, the seeded users, and (once the block is over)
    each process's exit code."""

    system: Supervisor
    provider: ProviderProcess
    users: list[str]
    exit_codes: dict[str, int] = field(default_factory=dict)


@contextmanager
def running_clarion(
    database_url: str,
    broker_url: str,
    namespace: str,
    folder: Path,
    *,
    email_workers: int,
    channel_workers: dict[str, int] | None = None,
    users: int = 20,
    misbehaviour: Misbehaviour | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Run]:
    """The provider, Clarion's processes on it (with extra CLARION_* `settings`), a template and `users` users; on
    leaving, every process is stopped with SIGTERM and its exit code kept in `exit_codes`."""
    provider = ProviderProcess(misbehaviour)
    try:
        env = {**base_env(database_url, broker_url, namespace, provider.host), **(settings or {})}
        system = Supervisor(env, folder, email_workers=email_workers, channel_workers=channel_workers)
        run = Run(system, provider, [])
        try:
            system.start()
            run.users = asyncio.run(seed(system.address, users=users, every_channel=bool(channel_workers)))
            yield run
        finally:
            run.exit_codes = system.stop()
    finally:
        provider.stop()


async def every_receipt(database_url: str, accepted: list[str], provider: ProviderProcess) -> collections.Counter[str]:
    """The receipts of every channel by delivery id: the provider's emails; its texts, matched to their deliveries
    by body (unique to a notification); and the inbox's messages, whose ids are their deliveries' (one row each, so
    an in-app duplicate cannot happen)."""
    receipts = provider.receipts()
    texts = provider.sms_receipts()
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        ids = [uuid.UUID(i) for i in accepted]
        sms = await connection.fetch(
            "SELECT id, payload->>'body' AS body FROM deliveries WHERE channel = 'sms' AND notification_id = ANY($1)",
            ids,
        )
        inbox = await connection.fetch("SELECT id FROM inbox_messages WHERE notification_id = ANY($1::uuid[])", ids)
    finally:
        await connection.close()
    by_body = {row["body"]: str(row["id"]) for row in sms}
    for body, count in texts.items():
        receipts[by_body.get(body, f"unknown text {body!r}")] += count
    for row in inbox:
        receipts[str(row["id"])] += 1
    return receipts
