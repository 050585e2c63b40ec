"""The chaos suite's pieces: Clarion as real processes under a small supervisor, a SendGrid stand-in that misbehaves
on purpose and records every receipt, a load generator that retries the way a careful client does, and the checker
that counts what was lost, what was unexpected and what was sent twice."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from clarion.core.db import asyncpg_dsn
from clarion.v1 import (
    notifications_pb2,
    notifications_pb2_grpc,
    templates_pb2,
    templates_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from tests.conftest import free_port
from tests.e2e.conftest import wait_until_serving
from tests.integration.conftest import RABBITMQ_URL
from tests.integration.delivery.fake_http import FakeHttpServer, Reply, Request
from tests.integration.delivery.fake_sendgrid import FakeSendGrid

BIN = Path(sys.executable).parent
API_KEY = "SG.chaos-key"
TERMINAL = ("sent", "partially_sent", "failed", "skipped", "cancelled")
# What a careful client retries, with the same idempotency key: the server is away, not the request wrong.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


@dataclass
class Misbehaviour:
    """How the provider misbehaves: a share of 503s, a share of slow answers that end in acceptance after the
    client gave up (the one way a provider can receive a message twice), and 429 storms switched on by the test."""

    error_rate: float = 0.0
    slow_rate: float = 0.0
    slow_s: float = 2.0
    storm: threading.Event = field(default_factory=threading.Event)


class ChaosProvider:
    """SendGrid's mail/send on loopback: checks each request as SendGrid would, misbehaves as told, and records the
    delivery id of every message it accepted (a receipt), including those accepted after the client left."""

    def __init__(self, http: FakeHttpServer, misbehaviour: Misbehaviour, *, seed: int = 1) -> None:
        self.sendgrid = FakeSendGrid(http, api_key=API_KEY)
        self.misbehaviour = misbehaviour
        self.receipts: collections.Counter[str] = collections.Counter()
        self.slow_accepts = 0
        self._chance = random.Random(seed)  # noqa: S311 - reproducible chaos, not cryptography
        self._lock = threading.Lock()
        http.route("/v3/mail/send", self._mail_send)

    @property
    def host(self) -> str:
        return self.sendgrid.host

    def _mail_send(self, request: Request) -> Reply:
        try:
            request.json()
        except ValueError:
            # A worker SIGKILLed while sending leaves half a body; SendGrid refuses it, and nobody hears the answer.
            return Reply(400, {"errors": [{"message": "Bad Request"}]})
        with self._lock:
            roll = self._chance.random()
        if self.misbehaviour.storm.is_set():
            return Reply(429, {"errors": [{"message": "too many requests"}]}, {"Retry-After": "1"})
        if roll < self.misbehaviour.error_rate:
            return Reply(503, {"errors": [{"message": "service unavailable"}]})
        reply = self.sendgrid._mail_send(request)
        if reply.status == 202:
            slow = roll < self.misbehaviour.error_rate + self.misbehaviour.slow_rate
            if slow:
                time.sleep(self.misbehaviour.slow_s)  # past the client's timeout: it gives up, we accept anyway
            with self._lock:
                self.receipts[request.json()["custom_args"]["delivery_id"]] += 1
                self.slow_accepts += slow
        return reply


class Supervisor:
    """Clarion's processes: `serve all`, the dispatcher, the sweeper and `email_workers` email workers, each a real
    `clarion` process. Workers can be SIGKILLed and replaced; everything is stopped at the end."""

    def __init__(self, env: dict[str, str], folder: Path, *, email_workers: int) -> None:
        self.env = env
        self.folder = folder
        self.address = f"127.0.0.1:{env['CLARION_GRPC_PORT']}"
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.kills = 0
        self._logs: list[object] = []
        self._email_workers = email_workers

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
        for n in range(self._email_workers):
            self._start(f"email-{n}", "worker", "email")

    def kill_and_replace(self, name: str) -> None:
        """SIGKILL a worker mid-work (no drain, no acks) and start a new one in its place."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        self.kills += 1
        self._start(name, "worker", "email")

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


def base_env(database_url: str, namespace: str, provider_host: str) -> dict[str, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(
        {
            "CLARION_DATABASE_URL": database_url,
            "CLARION_BROKER_URL": RABBITMQ_URL,
            "CLARION_BROKER_NAMESPACE": namespace,
            "CLARION_GRPC_PORT": str(port),
            "CLARION_METRICS_PORT": "0",
            "CLARION_HEALTH_PORT": "0",
            "CLARION_USERS_ADDRESS": f"127.0.0.1:{port}",
            "CLARION_TEMPLATES_ADDRESS": f"127.0.0.1:{port}",
            "CLARION_AUTH_REQUIRED": "false",
            "CLARION_SENDGRID_API_KEY": API_KEY,
            "CLARION_SENDGRID_HOST": provider_host,
            "CLARION_PROVIDER_TIMEOUT_S": "1",
            "CLARION_DELIVERY_LEASE_S": "5",
            "CLARION_SWEEPER_INTERVAL_S": "1",
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


async def seed(address: str, *, users: int) -> list[str]:
    """A template and `users` users; returns the users' ids."""
    async with grpc.aio.insecure_channel(address) as channel:
        await templates_pb2_grpc.TemplateServiceStub(channel).CreateTemplate(
            templates_pb2.CreateTemplateRequest(template={"template_key": "chaos", "subject": "#{n}", "body": "{n}"}),
            timeout=10,
        )
        stub = users_pb2_grpc.UserServiceStub(channel)
        ids = []
        for n in range(users):
            request = users_pb2.CreateUserRequest(user={"email_address": f"chaos-{n}@example.com"})
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
    lost: list[str]
    unexpected: list[str]
    duplicates: int
    failed_attempts: list[int]


async def check(
    database_url: str, accepted: list[str], receipts: collections.Counter[str], *, deadline_s: float
) -> Outcome:
    """Wait up to `deadline_s` for every accepted notification to be terminal, then count: lost (accepted, never
    terminal), unexpected (received by the provider, never accepted), duplicates (receipts beyond one)."""
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
    finally:
        await connection.close()
    known = {str(d["id"]) for d in deliveries}
    return Outcome(
        statuses=statuses,
        lost=sorted(set(waiting) | missing),
        unexpected=sorted(set(receipts) - known),
        duplicates=sum(n - 1 for n in receipts.values()),
        failed_attempts=[int(d["attempt_count"]) for d in deliveries if d["status"] == "failed"],
    )


@dataclass
class Run:
    """A running system under test: its processes, the provider, the seeded users, and (once the block is over)
    each process's exit code."""

    system: Supervisor
    provider: ChaosProvider
    users: list[str]
    exit_codes: dict[str, int] = field(default_factory=dict)


@contextmanager
def running_clarion(
    database_url: str,
    namespace: str,
    folder: Path,
    *,
    email_workers: int,
    users: int = 20,
    misbehaviour: Misbehaviour | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Run]:
    """The provider, Clarion's processes on it (with extra CLARION_* `settings`), a template and `users` users; on
    leaving, every process is stopped with SIGTERM and its exit code kept in `exit_codes`."""
    with FakeHttpServer() as http:
        chaos = ChaosProvider(http, misbehaviour or Misbehaviour())
        system = Supervisor(
            {**base_env(database_url, namespace, chaos.host), **(settings or {})}, folder, email_workers=email_workers
        )
        system.start()
        run = Run(system, chaos, [])
        try:
            run.users = asyncio.run(seed(system.address, users=users))
            yield run
        finally:
            run.exit_codes = system.stop()
