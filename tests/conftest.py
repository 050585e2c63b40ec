"""Shared fixtures: real PostgreSQL (a fresh database per test session), free ports, and the no-skip rule.

Integration tests skip when a service is unreachable only if CLARION_REQUIRE_SERVICES is unset; CI sets it, and
then any skip at all fails the run.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import structlog

from clarion.core.db import upgrade_database
from clarion.core.logging import configure_logging
from tests.helpers import LIFECYCLE_GUARD_SQL

REQUIRE_SERVICES = bool(os.environ.get("CLARION_REQUIRE_SERVICES"))
# A developer's `.env` (settings for `clarion up` against compose.yaml, say) must not reach the tests' settings.
os.environ.setdefault("CLARION_ENV_FILE", "")
# The server the tests use; each session creates its own database on it and drops it at the end.
TEST_POSTGRES_URL = os.environ.get("CLARION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


# `make test` and `make check` run two pytest workers (pytest-xdist), each taking whole groups of tests: chaos and
# fuzz (their own PostgreSQL and RabbitMQ; chaos mostly waits out the outages it causes), the delivery and
# notification integration tests, and everything else. Inside a group tests run one at a time, as they were
# written to. (A scheduler of our own, not `--dist loadgroup`: with pytest 9, xdist 3.8 no longer sees the marks.)
_OWN_INFRASTRUCTURE = frozenset({"chaos", "fuzz"})
_DELIVERY = frozenset({"delivery", "notifications"})


def group_of(nodeid: str) -> str:
    """The group a test runs in: `tests/<suite>/<area>/...`."""
    parts = nodeid.split("/")
    suite, area = [*parts, "", ""][1:3]
    if suite in _OWN_INFRASTRUCTURE:
        return "chaos-and-fuzz"
    if suite == "integration" and area in _DELIVERY:
        return "delivery"
    return "everything-else"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]  # only with xdist, untyped

    class ByGroup(LoadScopeScheduling):  # type: ignore[misc]  # xdist is untyped
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return ByGroup(config, log)


def free_port() -> int:
    """A TCP port nothing listens on right now, below the kernel's ephemeral range: a port the kernel hands out
    (bind to port 0) may be taken by any outgoing connection before the server the test starts listens on it, and on
    a busy machine that happens (Envoy failing with "Address already in use"). Random, so that parallel workers
    rarely try the same one; checked free by binding it."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    chance = random.Random()  # noqa: S311 - picking a port, not a secret
    for _ in range(500):
        port = chance.randrange(max(1024, ephemeral_low - 12000), ephemeral_low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # that range is full: any free port will have to do
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


def unavailable(what: str, why: object) -> None:
    """Skip (or, when services are required, fail) a test whose real dependency is not there."""
    message = f"{what} unreachable: {why}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (CLARION_REQUIRE_SERVICES is set)")
    pytest.skip(message)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(TEST_POSTGRES_URL, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _on(database: str, sql: str) -> None:
    connection = await asyncpg.connect(_with_database(TEST_POSTGRES_URL, database), timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The URL of the real PostgreSQL server, or a skip/fail when it is not reachable."""
    try:
        asyncio.run(_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        unavailable("PostgreSQL", exc)
    return TEST_POSTGRES_URL


@pytest.fixture(scope="session")
def migrated_template(postgres_server_url: str) -> Iterator[str]:
    """The name of a database migrated to the latest schema once per test session, copied by
    `make_database(migrated=True)`: a copy takes a fraction of running every migration again."""
    name = f"clarion_template_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        upgrade_database(_with_database(postgres_server_url, name))
        asyncio.run(_on(name, LIFECYCLE_GUARD_SQL))
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def make_database(postgres_server_url: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Factory: `make_database()` creates an empty database and returns its URL; `make_database(migrated=True)` one
    with every migration applied (a copy of the session's template). All are dropped afterwards."""
    created: list[str] = []

    def make(*, migrated: bool = False) -> str:
        name = f"clarion_test_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{request.getfixturevalue("migrated_template")}"' if migrated else ""
        asyncio.run(_admin(f'CREATE DATABASE "{name}"{template}'))
        created.append(name)
        return _with_database(postgres_server_url, name)

    yield make
    for name in created:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With CLARION_REQUIRE_SERVICES set, a skipped test is a failed run: CI must not pass by skipping."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if reporter is not None and REQUIRE_SERVICES and skipped and session.exitstatus == 0:
        reporter.write_line(f"{skipped} test(s) skipped while CLARION_REQUIRE_SERVICES is set: failing the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything Clarion logs during the test (its services run in this process), as production's JSON lines."""
    stream = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()
