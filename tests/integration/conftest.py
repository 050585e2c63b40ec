"""A running Clarion: the real services on a real gRPC server, over a freshly migrated PostgreSQL database, with API
keys required as in production; the fixture's channel carries an admin key."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import redis.asyncio
from pydantic import SecretStr

from clarion import app
from clarion.core.broker import Broker, create_broker
from clarion.core.cache import Cache, MemoryCache, RedisCache
from clarion.core.config import load_settings
from clarion.core.db import FastPath, create_engine, session_factory
from clarion.core.server import GrpcServer, ServiceRegistration
from clarion.delivery.queues import TOPOLOGY
from clarion.keys.auth import Authenticator, bearer_auth, server_auth
from clarion.keys.manage import create_key, create_service_key
from clarion.keys.repository import SqlKeyStore
from clarion.keys.scopes import DEFAULT_PROJECT, Scope
from clarion.templates.isolation import TemplateProcesses
from clarion.v1 import notifications_pb2_grpc, templates_pb2_grpc, users_pb2_grpc
from tests.conftest import free_port, unavailable

TEST_REDIS_URL = os.environ.get("CLARION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Every test server keys its API key hashes with this (CLARION_API_KEY_PEPPER).
TEST_PEPPER = "clarion-tests-pepper-not-a-secret-0123456789"
TEST_PEPPER_SECRET = SecretStr(TEST_PEPPER)


@pytest.fixture
def migrated_database(make_database: Callable[..., str]) -> str:
    """A new database with every migration applied."""
    return make_database(migrated=True)


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the real Redis, or a skip/fail when it is not reachable."""
    client = redis.asyncio.Redis.from_url(TEST_REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        await client.aclose()
        unavailable("Redis", exc)
    yield client
    await client.aclose()


@dataclass
class RunningClarion:
    """One server instance and a client of it: `channel` (and the stubs on it) send `api_key`, an admin key."""

    address: str
    channel: grpc.aio.Channel
    users: Any
    templates: Any
    notifications: Any
    resources: app.Resources
    api_key: str
    # What the server serves, by name (clarion.app.SERVICES).
    registrations: dict[str, ServiceRegistration] = field(default_factory=dict)

    async def make_key(self, *scopes: str, name: str = "test", project: str = DEFAULT_PROJECT) -> str:
        """A new key with `scopes` (default: admin) in `project` of this instance's database."""
        pepper = self.resources.settings.api_key_pepper
        assert pepper is not None
        issued = await create_key(
            self.resources.sessions, pepper=pepper, name=name, scopes=scopes or [Scope.ADMIN], project_id=project
        )
        return issued.token

    async def make_service_key(self, workload: str) -> str:
        """A new service key for `workload` (`clarion keys create-service`) in this instance's database."""
        pepper = self.resources.settings.api_key_pepper
        assert pepper is not None
        return (await create_service_key(self.resources.sessions, pepper=pepper, workload=workload)).token


class _SharedTemplateProcesses(TemplateProcesses):
    """One pool of template workers for the session's servers: spawning one per test cost each test that renders
    Jinja most of a second. Closed by its fixture, not by each server's Resources."""

    def close(self) -> None:
        pass

    def close_for_good(self) -> None:
        super().close()


@pytest.fixture(scope="session")
def template_processes() -> Iterator[TemplateProcesses]:
    processes = _SharedTemplateProcesses(workers=1)
    yield processes
    processes.close_for_good()


@pytest.fixture
async def start_clarion(
    migrated_database: str, template_processes: TemplateProcesses
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: `await start_clarion(cache=..., **settings)` runs every service on a new port, all on one database;
    NotificationService calls this instance's users and templates over gRPC unless the settings say otherwise, or
    in process with `in_process=True`."""
    stack = contextlib.AsyncExitStack()

    async def start(cache: Cache | None = None, *, in_process: bool = False, **overrides: Any) -> RunningClarion:
        port = free_port()
        settings = load_settings(
            **{"grpc_port": port, "shutdown_grace_s": 0, "api_key_pepper": TEST_PEPPER, **overrides}
        )
        engine = create_engine(migrated_database, settings=settings)
        sessions = session_factory(engine)
        authenticator = Authenticator.from_settings(SqlKeyStore(sessions), settings) if settings.auth_required else None
        if settings.auth_required and settings.service_key is None and not in_process:
            # NotificationService calls the other two over gRPC with its own service key, as in Kubernetes.
            issued = await create_service_key(sessions, pepper=TEST_PEPPER_SECRET, workload="notifications")
            settings = settings.model_copy(update={"service_key": SecretStr(issued.token)})
        clients = app.service_clients(settings, own_address=f"127.0.0.1:{port}")
        fast = FastPath(migrated_database, max_size=settings.database_pool_size)
        resources = app.Resources(
            settings, engine, sessions, cache or MemoryCache(), clients, authenticator, fast, template_processes
        )
        stack.push_async_callback(resources.close)
        registrations = {name: registration(resources) for name, registration in app.SERVICES.items()}
        if in_process:  # as `clarion serve all` does: NotificationService calls the other two without gRPC
            app.wire_in_process(settings, clients, registrations)
        server = GrpcServer(settings, app.served(registrations), auth=server_auth(resources.authenticator))
        await server.start()
        stack.push_async_callback(server.server.stop, 0)
        for running in registrations.values():
            if running.stop is not None:  # before the server stops, as clarion.app.serve does
                stack.push_async_callback(running.stop)
        pepper = settings.api_key_pepper or TEST_PEPPER_SECRET
        api_key = (await create_key(sessions, pepper=pepper, name="tests", scopes=[Scope.ADMIN])).token
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=bearer_auth(api_key))
        stack.push_async_callback(channel.close)
        return RunningClarion(
            f"127.0.0.1:{port}",
            channel,
            users_pb2_grpc.UserServiceStub(channel),
            templates_pb2_grpc.TemplateServiceStub(channel),
            notifications_pb2_grpc.NotificationServiceStub(channel),
            resources,
            api_key,
            registrations,
        )

    yield start
    await stack.aclose()


@pytest.fixture
async def clarion(start_clarion: Callable[..., Any]) -> RunningClarion:
    """One running instance with the in-process cache."""
    running: RunningClarion = await start_clarion()
    return running


@pytest.fixture
async def redis_cache_factory(redis_client: redis.asyncio.Redis) -> AsyncIterator[Callable[[], RedisCache]]:
    """Factory of RedisCaches that share one key prefix, as the instances of one deployment do. Each cache is
    closed by whoever runs it (Resources.close); the keys are deleted afterwards."""
    prefix = f"clarion-test-{uuid.uuid4().hex[:8]}:"

    def make() -> RedisCache:
        return RedisCache(redis.asyncio.Redis.from_url(TEST_REDIS_URL, socket_timeout=2), prefix=prefix)

    yield make
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*")]
    if keys:
        await redis_client.delete(*keys)


RABBITMQ_URL = os.environ.get("CLARION_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(params=["rabbitmq", "memory"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    """A connected broker on its own namespace: real RabbitMQ, and the in-memory one; its topology goes afterwards."""
    made = create_broker(
        RABBITMQ_URL if request.param == "rabbitmq" else None,
        topology=TOPOLOGY,
        namespace=f"test-{uuid.uuid4().hex[:8]}",
    )
    try:
        await made.connect()
    except Exception as exc:  # noqa: BLE001 - any connection failure means RabbitMQ is not there
        unavailable("RabbitMQ", exc)
    yield made
    delete = getattr(made, "delete_topology", None)
    if delete is not None:
        await delete()
    await made.close()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """The port of a TCP server that accepts connections and never answers, like a wedged RabbitMQ or Redis."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    yield port
    server.close()
    for writer in writers:
        writer.close()
    await server.wait_closed()
