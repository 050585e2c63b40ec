"""The soak: Clarion's processes for half an hour at half the sustained rate, while an email worker is SIGKILLed
every minute and PostgreSQL goes away once; then what was lost, stuck or sent twice, and how each process's memory
and open file descriptors moved. Not part of CI (`make soak`; figures in bench/RESULTS.md).

    python -m bench.soak                                 # 30 minutes at 140/s, a 30 s outage at minute 15
    python -m bench.soak --minutes 3 --rate 50 --outage-at-s 60 --outage-s 10

It runs on a PostgreSQL server and a RabbitMQ node of its own, with the SendGrid stand-in in a process of its own,
and counts with the chaos suite's checker (tests/chaos/harness.py): every duplicate must have its recorded cause.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from bench.run import paced, rss_mib
from clarion.core.db import asyncpg_dsn, upgrade_database
from clarion.v1 import notifications_pb2, notifications_pb2_grpc
from tests.chaos.harness import RETRYABLE, Supervisor, base_env, check, seed
from tests.chaos.infra import ChaosPostgres, ChaosRabbitMQ
from tests.chaos.provider import ProviderProcess


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


@dataclass
class Samples:
    """RSS (MiB) and open file descriptors of each role over the run, sampled every `every_s`."""

    rss: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    fds: dict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))

    def take(self, system: Supervisor) -> None:
        for name, process in list(system.processes.items()):
            if process.poll() is None:
                self.rss[name].append(rss_mib(process.pid))
                self.fds[name].append(open_fds(process.pid))


def havoc(system: Supervisor, postgres: ChaosPostgres, args: argparse.Namespace, done: threading.Event) -> list[str]:
    """SIGKILL an email worker (alternating) every `kill_every_s`; stop PostgreSQL once for `outage_s`."""
    events: list[str] = []
    started = time.monotonic()
    turn = 0
    outage_done = False
    while not done.wait(1.0):
        elapsed = time.monotonic() - started
        if not outage_done and elapsed >= args.outage_at_s:
            outage_done = True
            postgres.stop()
            events.append(f"{elapsed:.0f}s postgres stopped")
            time.sleep(args.outage_s)
            postgres.start()
            events.append(f"{time.monotonic() - started:.0f}s postgres started")
        if elapsed >= (turn + 1) * args.kill_every_s:
            system.kill_and_replace(f"email-{turn % 2}")
            events.append(f"{elapsed:.0f}s killed email-{turn % 2}")
            turn += 1
    return events


async def load(address: str, users: list[str], *, rate: float, duration_s: float) -> tuple[list[str], int, float]:
    """Open-loop SendNotification at `rate` for `duration_s`, each retried with its key while the server is away.
    Returns the accepted ids, the requests that failed for good, and the achieved rate."""
    accepted: list[str] = []
    counter = itertools.count()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = notifications_pb2_grpc.NotificationServiceStub(channel)

        async def send(n: int) -> None:
            request = notifications_pb2.SendNotificationRequest(
                user_id=users[n % len(users)], template_key="chaos", request_id=f"soak-{n}-{uuid.uuid4().hex}"
            )
            request.message_data.update({"n": str(next(counter))})
            delay_s = 0.1
            while True:
                try:
                    response = await stub.SendNotification(request, timeout=10)
                    accepted.append(response.notification.notification_id)
                    return
                except grpc.aio.AioRpcError as error:
                    if error.code() not in RETRYABLE:
                        raise
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 2.0)

        _, errors, achieved = await paced(rate, duration_s, 128, send)
    return accepted, errors, achieved


async def create_database(server_url: str) -> str:
    name = f"soak_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def row(name: str, values: list[float] | list[int]) -> str:
    if not values:
        return f"| {name} | - | - | - |"
    return f"| {name} | {values[0]:.0f} | {max(values):.0f} | {values[-1]:.0f} |"


def main(args: argparse.Namespace) -> None:
    postgres, rabbitmq = ChaosPostgres(), ChaosRabbitMQ()
    provider: ProviderProcess | None = None
    system: Supervisor | None = None
    try:
        postgres.start()
        rabbitmq.start()
        database = asyncio.run(create_database(postgres.url))
        upgrade_database(database)
        provider = ProviderProcess()
        env = base_env(database, rabbitmq.url, "soak", provider.host)
        env["CLARION_LOG_LEVEL"] = "error"
        system = Supervisor(env, Path(tempfile.mkdtemp(prefix="clarion-soak-")), email_workers=2)
        system.start()
        users = asyncio.run(seed(system.address, users=200))
        samples, done = Samples(), threading.Event()
        events: list[str] = []

        def sample() -> None:
            while not done.wait(args.sample_every_s):
                samples.take(system)  # type: ignore[arg-type]

        threads = [
            threading.Thread(target=lambda: events.extend(havoc(system, postgres, args, done)), name="havoc"),  # type: ignore[arg-type]
            threading.Thread(target=sample, name="sampler"),
        ]
        samples.take(system)
        for thread in threads:
            thread.start()
        try:
            accepted, errors, achieved = asyncio.run(
                load(system.address, users, rate=args.rate, duration_s=args.minutes * 60)
            )
        finally:
            done.set()
            for thread in threads:
                thread.join(timeout=120)
        samples.take(system)
        outcome = asyncio.run(check(database, accepted, provider.receipts, deadline_s=args.deadline_s))
        codes = system.stop()
        system = None
    finally:
        if system is not None:
            system.stop()
        if provider is not None:
            provider.stop()
        rabbitmq.remove()
        postgres.remove()

    print(
        f"soak: {args.minutes} min at {args.rate:g}/s (achieved {achieved:.1f}/s), {len(accepted)} accepted, "
        f"{errors} failed for good"
    )
    print("events: " + "; ".join(events))
    print()
    print("| accepted | lost | stuck | unexpected | duplicates | unexplained | unknown attempts | exit codes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {len(accepted)} | {len(outcome.lost)} | {len(outcome.stuck)} | {len(outcome.unexpected)} | "
        f"{outcome.duplicates} | {len(outcome.unexplained)} | {outcome.unknown_attempts} | "
        f"{sorted(set(codes.values()))} |"
    )
    print()
    print("| process | RSS MiB first | peak | last | open fds first | peak | last |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in samples.rss:
        rss, fds = row(name, samples.rss[name]), row("", samples.fds[name])
        print(rss + fds.split("|", 2)[2])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=140, help="notifications per second (half the sustained rate)")
    parser.add_argument("--kill-every-s", type=float, default=60)
    parser.add_argument("--outage-at-s", type=float, default=900)
    parser.add_argument("--outage-s", type=float, default=30)
    parser.add_argument("--sample-every-s", type=float, default=30)
    parser.add_argument("--deadline-s", type=float, default=600)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
