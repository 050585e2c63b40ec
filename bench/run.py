"""Clarion's load benchmark: the whole system as real processes on real PostgreSQL and RabbitMQ, driven over gRPC (and
over REST through the real Envoy), with the machine's ceilings measured in the same run.

    python -m bench.run --duration 60 --rate 2000        # what `make bench` runs
    python -m bench.run --duration 10 --rate 500 --rest-rate 0

Push notifications go through the `simulated` provider, a sink that records each one as SENT: the figures are
Clarion's own cost, not a provider's. Prints a table: accepted/s, delivered/s end to end, accept latency over gRPC
and REST, accept→provider latency, CPU and memory per process, and the ratios to the ceilings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc

from bench import ceilings
from clarion.core.broker_rabbitmq import RabbitMQBroker
from clarion.core.config import load_settings
from clarion.core.db import asyncpg_dsn, upgrade_database
from clarion.delivery.queues import TOPOLOGY
from clarion.gateway.local import local_gateway
from clarion.v1 import (
    notifications_pb2,
    notifications_pb2_grpc,
    templates_pb2,
    templates_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)

BIN = Path(sys.executable).parent
POSTGRES_URL = os.environ.get("CLARION_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
RABBITMQ_URL = os.environ.get("CLARION_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# The infrastructure on the same machine, by process name: its CPU is part of each notification's cost.
INFRASTRUCTURE = {"postgres": "PostgreSQL", "beam.smp": "RabbitMQ", "envoy": "Envoy"}


def infrastructure_cpu_s() -> dict[str, float]:
    """CPU seconds used so far by every PostgreSQL, RabbitMQ and Envoy process, by name."""
    used = dict.fromkeys(INFRASTRUCTURE.values(), 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "comm").read_text().strip()
            if command in INFRASTRUCTURE:
                used[INFRASTRUCTURE[command]] += cpu_s(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # it ended while we looked
    return used


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Processes:
    """Clarion's processes for the run, by role."""

    env: dict[str, str]
    folder: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        log = (self.folder / f"{name}.log").open("ab")
        self.running[name] = subprocess.Popen(
            [str(BIN / "clarion"), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def cpu(self) -> dict[str, float]:
        return {name: cpu_s(p.pid) for name, p in self.running.items()}

    def rss(self) -> dict[str, float]:
        return {name: rss_mib(p.pid) for name, p in self.running.items()}

    def stop(self) -> None:
        for process in self.running.values():
            process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()


async def wait_serving(address: str, timeout_s: float = 60) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as channel:
        while True:
            try:
                stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs type it sync; on an aio channel it awaits
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address} did not start")
            await asyncio.sleep(0.2)


async def seed(address: str, users: int) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        await templates_pb2_grpc.TemplateServiceStub(channel).CreateTemplate(
            templates_pb2.CreateTemplateRequest(
                template=templates_pb2.Template(template_key="bench", push_title="Hi {n}", push_body="Update {n}")
            ),
            timeout=10,
        )
        stub = users_pb2_grpc.UserServiceStub(channel)
        ids = []
        for n in range(users):
            user = await stub.CreateUser(
                users_pb2.CreateUserRequest(user=users_pb2.User(display_name=f"b{n}")), timeout=10
            )
            device = users_pb2.Device(token=f"t{n}", platform=users_pb2.DEVICE_PLATFORM_ANDROID)
            await stub.AddDevice(users_pb2.AddDeviceRequest(user_id=user.user_id, device=device), timeout=10)
            ids.append(user.user_id)
        return ids


async def paced(
    rate: float, duration_s: float, in_flight: int, send: Callable[[int], Awaitable[None]]
) -> tuple[list[float], int, float]:
    """Open-loop load: request i is due at start + i / rate; `in_flight` senders take the next due one. Returns the
    latencies (s), the errors and the achieved rate."""
    latencies: list[float] = []
    errors = 0
    total = int(rate * duration_s)
    counter = itertools.count()
    start = time.perf_counter()

    stop_at = start + duration_s

    async def sender() -> None:
        nonlocal errors
        # Bounded in time as well as count: a system slower than the rate gets `duration_s` of load, not a backlog.
        while (i := next(counter)) < total and time.perf_counter() < stop_at:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            began = time.perf_counter()
            try:
                await send(i)
            except Exception:  # noqa: BLE001 - counted and reported; a benchmark keeps going
                errors += 1
                continue
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(sender() for _ in range(in_flight)))
    return latencies, errors, len(latencies) / (time.perf_counter() - start)


Phase = tuple[list[float], int, float]  # latencies (s), errors, achieved rate: what `paced` returns
_QUANTILE_NAMES = {0.5: "p50", 0.95: "p95", 0.99: "p99"}


def latency_row(
    label: str, phase: Phase, quantiles: tuple[float, ...] = (0.5, 0.95, 0.99), *, counts: bool = True
) -> tuple[str, str]:
    """A table row: the phase's latency percentiles in ms, with its errors and achieved rate when `counts`."""
    latencies, errors, rate = phase
    value = " / ".join(f"{percentile(latencies, q) * 1000:.1f} ms" for q in quantiles)
    if counts:
        value += f"  ({errors} errors, {rate:,.0f}/s)"
    return f"{label} {' / '.join(_QUANTILE_NAMES[q] for q in quantiles)}", value


async def grpc_load(address: str, users: list[str], rate: float, duration_s: float) -> tuple[list[float], int, float]:
    channels = [grpc.aio.insecure_channel(address) for _ in range(4)]
    stubs = [notifications_pb2_grpc.NotificationServiceStub(c) for c in channels]
    run = uuid.uuid4().hex[:6]

    async def send(i: int) -> None:
        request = notifications_pb2.SendNotificationRequest(
            user_id=users[i % len(users)], template_key="bench", request_id=f"{run}-{i}"
        )
        request.message_data.update({"n": str(i)})
        await stubs[i % len(stubs)].SendNotification(request, timeout=10)

    try:
        return await paced(rate, duration_s, min(512, max(16, int(rate * 0.05))), send)
    finally:
        for channel in channels:
            await channel.close()


class RawHttp:
    """A keep-alive HTTP/1.1 client of the fewest instructions: the load generator shares the machine with the system
    under test, so its own CPU is the system's loss (httpx costs several times more per request)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def post(self, path: str, body: bytes) -> int:
        try:
            reader, writer = self._pool.get_nowait()
        except asyncio.QueueEmpty:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        self._pool.put_nowait((reader, writer))
        status = int(status_line.split()[1])
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        return status


BATCH = 100  # notifications per BatchSendNotifications call in the batched phase


async def grpc_batch_load(
    address: str, users: list[str], rate: float, duration_s: float
) -> tuple[list[float], int, float]:
    """BatchSendNotifications of BATCH each at `rate` notifications/s. Latencies are per call; the achieved rate is
    in notifications/s; a call with any failed item counts as an error."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(2)]
    stubs = [notifications_pb2_grpc.NotificationServiceStub(c) for c in channels]
    run = uuid.uuid4().hex[:6]

    async def send(i: int) -> None:
        requests = []
        for k in range(BATCH):
            n = i * BATCH + k
            request = notifications_pb2.SendNotificationRequest(
                user_id=users[n % len(users)], template_key="bench", request_id=f"b{run}-{n}"
            )
            request.message_data.update({"n": str(n)})
            requests.append(request)
        response = await stubs[i % len(stubs)].BatchSendNotifications(
            notifications_pb2.BatchSendNotificationsRequest(requests=requests), timeout=30
        )
        if any(result.HasField("error") for result in response.results):
            raise RuntimeError("an item failed")

    calls = rate / BATCH
    latencies, errors, achieved_calls = await paced(calls, duration_s, min(64, max(4, int(calls * 0.5))), send)
    return latencies, errors, achieved_calls * BATCH


async def rest_load(port: int, users: list[str], rate: float, duration_s: float) -> tuple[list[float], int, float]:
    client = RawHttp("127.0.0.1", port)
    run = uuid.uuid4().hex[:6]

    async def send(i: int) -> None:
        body = {
            "user_id": users[i % len(users)],
            "template_key": "bench",
            "request_id": f"r{run}-{i}",
            "message_data": {"n": str(i)},
        }
        await client.post("/v1/notifications", json.dumps(body).encode())

    return await paced(rate, duration_s, min(256, max(16, int(rate * 0.05))), send)


async def delivered(dsn: str) -> tuple[int, int]:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM notifications), (SELECT count(*) FROM deliveries WHERE status = 'sent')"
        )
        assert row is not None
        return int(row[0]), int(row[1])
    finally:
        await connection.close()


async def accept_to_provider(dsn: str) -> tuple[float, float]:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.sent_at - n.created_at)),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.sent_at - n.created_at))"
            " FROM deliveries d JOIN notifications n ON n.id = d.notification_id WHERE d.status = 'sent'"
        )
        assert row is not None
        return float(row[0] or "nan"), float(row[1] or "nan")
    finally:
        await connection.close()


# The tables a notification rewrites: a queue-like churn of row versions that autovacuum normally clears.
CHURNING_TABLES = ("notifications", "deliveries", "idempotency_keys", "delivery_attempts")


@dataclass(frozen=True)
class RowWrites:
    """Row versions written so far (inserted + updated), and how many of the updates were HOT, by table."""

    inserted: dict[str, int]
    updated: dict[str, int]
    hot: dict[str, int]

    def __sub__(self, before: RowWrites) -> RowWrites:
        return RowWrites(
            *(
                {table: now[table] - then.get(table, 0) for table in now}
                for now, then in (
                    (self.inserted, before.inserted),
                    (self.updated, before.updated),
                    (self.hot, before.hot),
                )
            )
        )

    def versions(self, tables: tuple[str, ...]) -> int:
        return sum(self.inserted[t] + self.updated[t] for t in tables)


async def row_writes(dsn: str) -> RowWrites:
    """pg_stat_user_tables for the churning tables (a backend reports its counts within a second of going idle)."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = ANY($1)",
            list(CHURNING_TABLES),
        )
    finally:
        await connection.close()
    return RowWrites(
        {r["relname"]: r["n_tup_ins"] for r in rows},
        {r["relname"]: r["n_tup_upd"] for r in rows},
        {r["relname"]: r["n_tup_hot_upd"] for r in rows},
    )


@dataclass
class Measured:
    """One load phase, measured until everything it accepted was delivered."""

    name: str
    load: tuple[list[float], int, float]  # per-call latencies, errors, achieved notifications/s
    accepted: int
    sent: int
    wall_s: float
    cpu: dict[str, float]  # CPU seconds used in the phase, by process (Clarion's, infrastructure, load generator)
    rss: dict[str, tuple[float, float]]
    writes: RowWrites

    @property
    def delivered_per_s(self) -> float:
        return self.sent / self.wall_s


async def measure(
    name: str,
    dsn: str,
    processes: Processes,
    load: Callable[[], Awaitable[tuple[list[float], int, float]]],
    *,
    patience_s: float,
) -> Measured:
    """Run `load`, then wait (at most `patience_s`) until every notification accepted so far is delivered; the CPU
    of every process and the row versions written over that span."""
    accepted_before, sent_before = await delivered(dsn)
    writes_before = await row_writes(dsn)
    cpu_before, rss_before = processes.cpu(), processes.rss()
    infra_before, me_before = infrastructure_cpu_s(), cpu_s(os.getpid())
    started = time.perf_counter()
    result = await load()
    accepted, _ = await delivered(dsn)
    while (await delivered(dsn))[1] < accepted and time.perf_counter() - started < patience_s:  # noqa: ASYNC110 - polls the database
        await asyncio.sleep(0.5)
    wall = time.perf_counter() - started
    _, sent = await delivered(dsn)
    cpu_after, rss_after = processes.cpu(), processes.rss()
    infra_after, me_after = infrastructure_cpu_s(), cpu_s(os.getpid())
    await asyncio.sleep(1.5)  # the backends report their row counts when idle
    writes = await row_writes(dsn) - writes_before
    cpu = {p: cpu_after[p] - cpu_before[p] for p in cpu_after}
    cpu |= {p: infra_after[p] - infra_before[p] for p in infra_after if p != "Envoy"}
    cpu["load generator"] = me_after - me_before
    rss = {p: (rss_before[p], rss_after[p]) for p in rss_after}
    return Measured(name, result, accepted - accepted_before, sent - sent_before, wall, cpu, rss, writes)


VACUUM_INTERVAL_S = 10.0


async def vacuum_if_autovacuum_is_off(dsn: str, stop: asyncio.Event) -> None:
    """Stand in for autovacuum when the server has it off (as this machine's PostgreSQL does): without it, dead row
    versions pile up in the outbox indexes and every scan reads more of them, and the run measures that instead of
    Clarion. Its CPU is PostgreSQL's and is counted as such, as autovacuum's would be."""
    connection = await asyncpg.connect(dsn)
    try:
        if await connection.fetchval("SHOW autovacuum") == "on":
            return
        print(f"PostgreSQL has autovacuum off: the run vacuums its tables every {VACUUM_INTERVAL_S:.0f} s", flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), VACUUM_INTERVAL_S)
            if not stop.is_set():
                await connection.execute(f"VACUUM (ANALYZE) {', '.join(CHURNING_TABLES)}")
    finally:
        await connection.close()


def _database(name: str) -> str:
    parts = urlsplit(POSTGRES_URL)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def main(args: argparse.Namespace) -> None:
    ceiling_s = args.ceiling_duration
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
    print(f"ceilings ({ceiling_s:.0f} s each)...", flush=True)
    echo = await ceilings.grpc_echo_rps(duration_s=ceiling_s)
    pipe = await ceilings.rabbitmq_pipe_mps(RABBITMQ_URL, duration_s=ceiling_s)
    inserts = await ceilings.postgres_insert_rps(asyncpg_dsn(POSTGRES_URL), duration_s=ceiling_s)

    name = f"clarion_bench_{uuid.uuid4().hex[:8]}"
    phases: list[Measured] = []
    admin = await asyncpg.connect(asyncpg_dsn(POSTGRES_URL))
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = _database(name)
    await asyncio.to_thread(upgrade_database, database_url)
    dsn = asyncpg_dsn(database_url)
    folder = Path(tempfile.mkdtemp(prefix="clarion-bench-"))
    port = args.grpc_port or free_port()
    http_port = args.http_port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(
        {
            "CLARION_DATABASE_URL": database_url,
            "CLARION_BROKER_URL": RABBITMQ_URL,
            "CLARION_BROKER_NAMESPACE": f"bench-{uuid.uuid4().hex[:6]}",
            "CLARION_GRPC_PORT": str(port),
            "CLARION_METRICS_PORT": "0",
            "CLARION_HEALTH_PORT": "0",
            "CLARION_AUTH_REQUIRED": "false",
            "CLARION_LOG_LEVEL": "warning",
            "CLARION_DISPATCH_BATCH_SIZE": "500",
            "CLARION_WORKER_PREFETCH": "64",
            "CLARION_DATABASE_POOL_SIZE": "20",
        }
    )
    processes = Processes(env, folder)
    address = f"127.0.0.1:{port}"
    stop_vacuum = asyncio.Event()
    vacuum = asyncio.create_task(vacuum_if_autovacuum_is_off(dsn, stop_vacuum))
    try:
        processes.start("server", "serve", "all")
        await wait_serving(address)
        processes.start("dispatcher", "worker", "dispatcher")
        for n in range(args.push_workers):
            processes.start(f"push-{n}", "worker", "push")
        users = await seed(address, 200)
        await asyncio.sleep(2)

        print(f"gRPC load: {args.rate}/s for {args.duration} s...", flush=True)
        single = await measure(
            "single",
            dsn,
            processes,
            lambda: grpc_load(address, users, args.rate, args.duration),
            patience_s=args.duration + 120,
        )
        phases.append(single)
        latencies, errors, achieved = single.load
        p50_a2p, p99_a2p = await accept_to_provider(dsn)
        batched = batched_unloaded = None
        if args.batch_rate:
            print(f"gRPC batched load: {args.batch_rate}/s in calls of {BATCH} for {args.duration} s...", flush=True)
            batched = await measure(
                "batched",
                dsn,
                processes,
                lambda: grpc_batch_load(address, users, args.batch_rate, args.duration),
                patience_s=args.duration + 120,
            )
            phases.append(batched)
            half = max(BATCH / 2, round(batched.load[2] / 2, -2))
            print(f"gRPC batched latency at {half:.0f}/s (half the rate sustained) for 15 s...", flush=True)
            batched_unloaded = (half, await grpc_batch_load(address, users, half, 15))

        # Latency without queueing: at half the rate the system sustained in the first phase.
        unloaded_rate = max(10.0, round(achieved / 2, -1))
        rest = rest_unloaded = None
        if args.rest_rate:
            print(f"REST load through Envoy: {args.rest_rate}/s for {args.rest_duration} s...", flush=True)
            # Keys are off in the benchmark, as in the server it measures: no per-client buckets at the edge.
            settings = load_settings(
                http_port=http_port, data_dir=folder / "gateway", log_level="warning", auth_required=False
            )
            async with local_gateway(settings, grpc_port=port):
                rest = await rest_load(http_port, users, args.rest_rate, args.rest_duration)
                print(f"REST latency at {unloaded_rate:.0f}/s (half the gRPC rate sustained) for 15 s...", flush=True)
                rest_unloaded = await rest_load(http_port, users, unloaded_rate, 15)
        grpc_1000 = None
        if args.rate != 1000 and args.latency_at_1000:
            print("gRPC latency at 1000/s for 15 s...", flush=True)
            grpc_1000 = await grpc_load(address, users, 1000, 15)
        print(f"gRPC latency at {unloaded_rate:.0f}/s (half the rate sustained) for 15 s...", flush=True)
        unloaded = await grpc_load(address, users, unloaded_rate, 15)
    finally:
        stop_vacuum.set()
        await asyncio.gather(vacuum, return_exceptions=True)
        processes.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        # The run's queues and exchanges go with it: RabbitMQ keeps durable ones forever.
        try:
            await RabbitMQBroker(
                RABBITMQ_URL, topology=TOPOLOGY, namespace=env["CLARION_BROKER_NAMESPACE"]
            ).delete_topology()
        except Exception as exc:  # noqa: BLE001 - the run's own error, if any, is the one to see
            print(f"could not delete the run's RabbitMQ queues: {exc!r}", file=sys.stderr)

    ms = 1000.0
    rows = [
        ("target rate (gRPC SendNotification)", f"{args.rate}/s for {args.duration} s"),
        ("accepted/s (gRPC, achieved)", f"{achieved:,.0f}  ({errors} errors)"),
        (
            "delivered/s end to end",
            f"{single.delivered_per_s:,.0f}  ({single.sent:,} of {single.accepted:,} in {single.wall_s:.1f} s)",
        ),
        latency_row("accept latency gRPC", (latencies, errors, achieved), counts=False),
    ]
    if grpc_1000 is not None:
        rows.append(latency_row("accept latency gRPC at 1000/s", grpc_1000, (0.5, 0.99), counts=False))
    rows.append(latency_row(f"accept latency gRPC at {unloaded_rate:.0f}/s", unloaded))
    if rest_unloaded is not None:
        rows.append(latency_row(f"accept latency REST at {unloaded_rate:.0f}/s", rest_unloaded))
    if rest is not None:
        rows.append(latency_row(f"accept latency REST at {args.rest_rate}/s", rest))
    rows.append(("accept -> provider p50 / p99", f"{p50_a2p * ms:.0f} ms / {p99_a2p * ms:.0f} ms"))
    if batched is not None and batched_unloaded is not None:
        half, batch_latency = batched_unloaded
        rows += [
            (f"batched: accepted/s (calls of {BATCH})", f"{batched.load[2]:,.0f}  ({batched.load[1]} failed calls)"),
            (
                "batched: delivered/s end to end",
                f"{batched.delivered_per_s:,.0f}  ({batched.sent:,} of {batched.accepted:,} in {batched.wall_s:.1f} s)",
            ),
            latency_row(f"batched: call latency at {half:.0f}/s", batch_latency),
        ]
    for phase in phases:
        per = max(phase.sent, 1)
        for proc, used in phase.cpu.items():
            memory = ""
            if proc in phase.rss:
                memory = f"; RSS {phase.rss[proc][0]:.0f} -> {phase.rss[proc][1]:.0f} MiB"
            rows.append(
                (
                    f"{phase.name}: CPU {proc}",
                    f"{used / phase.wall_s * 100:.0f} % of a core, {used / per * 1e6:.0f} µs per delivery{memory}",
                )
            )
        writes, notifications = phase.writes, max(phase.accepted, 1)
        core = ("notifications", "deliveries")
        updates = sum(writes.updated[t] for t in core)
        hot = sum(writes.hot[t] for t in core)
        by_table = ", ".join(
            f"{t} {writes.inserted[t] / notifications:.2f}+{writes.updated[t] / notifications:.2f}"
            for t in CHURNING_TABLES
        )
        rows += [
            (
                f"{phase.name}: row versions per notification",
                f"{writes.versions(core) / notifications:.2f} in notifications+deliveries "
                f"({writes.versions(CHURNING_TABLES) / notifications:.2f} with keys and attempts; target 4)",
            ),
            (f"{phase.name}: inserted+updated per notification", by_table),
            (
                f"{phase.name}: HOT updates",
                f"{hot / max(updates, 1):.0%} of {updates / notifications:.2f} updates per notification (target 80 %)",
            ),
        ]
    rows += [
        ("ceiling: bare grpc.aio echo", f"{echo:,.0f} RPC/s  (accepted/s = {achieved / echo:.0%} of it)"),
        (
            "ceiling: bare aio-pika confirm+ack pipe",
            f"{pipe:,.0f} msg/s  (delivered/s single = {single.delivered_per_s / pipe:.0%} of it, target 35 %"
            + (f"; batched = {batched.delivered_per_s / pipe:.0%}, target 60 %)" if batched is not None else ")"),
        ),
        ("ceiling: bare asyncpg inserts", f"{inserts:,.0f} rows/s  (accepted/s = {achieved / inserts:.0%} of it)"),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print(f"\nlogs: {folder}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000, help="SendNotification calls per second (2000)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of gRPC load (60)")
    parser.add_argument(
        "--rest-rate", type=float, default=1000, help="REST calls per second through Envoy (1000; 0: none)"
    )
    parser.add_argument("--rest-duration", type=float, default=15, help="seconds of REST load (15)")
    parser.add_argument(
        "--batch-rate",
        type=float,
        default=4000,
        help=f"notifications per second in BatchSendNotifications calls of {BATCH} (4000; 0: no batched phase)",
    )
    parser.add_argument(
        "--latency-at-1000",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure gRPC latency at 1000/s (on)",
    )
    parser.add_argument("--ceiling-duration", type=float, default=5, help="seconds per ceiling (5)")
    parser.add_argument("--push-workers", type=int, default=1, help="push worker processes (1)")
    parser.add_argument("--grpc-port", type=int, default=0, help="the system's gRPC port (default: a free one)")
    parser.add_argument(
        "--http-port", type=int, default=0, help="Envoy's port for the REST phase (default: a free one)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
