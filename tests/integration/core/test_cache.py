"""The read-through cache against real Redis (and in memory): hits, misses, TTLs, failures and the stale-write race."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

import pytest
import redis
import structlog
from redis.asyncio import Redis

from clarion.core.cache import REDIS_TIMEOUT_S, Cache, MemoryCache, RedisCache, create_cache
from tests.conftest import free_port, unavailable

TEST_REDIS_URL = os.environ.get("CLARION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = ["memory", "redis"]
# A Redis call may take REDIS_TIMEOUT_S; the rest is slack for a loaded CI machine.
BOUNDED_S = REDIS_TIMEOUT_S + 0.4


class CacheFactory(Protocol):
    def __call__(self, *, ttl_s: float = 300) -> Cache: ...


class Row:
    """A stand-in for the database row behind a key: `value` is what a load reads now; `loads` counts them."""

    def __init__(self, value: bytes | None) -> None:
        self.value = value
        self.loads = 0

    async def load(self) -> bytes | None:
        self.loads += 1
        return self.value


class GatedLoad:
    """A slow load: it reads the row when it starts, then waits for `release` before returning what it read."""

    def __init__(self, row: Row) -> None:
        self.row = row
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> bytes | None:
        value = await self.row.load()
        self.started.set()
        await self.release.wait()
        return value


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of the real Redis, or a skip/fail when it is not reachable."""
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        unavailable("Redis", exc)
    finally:
        client.close()
    return TEST_REDIS_URL


@pytest.fixture
async def redis_admin(redis_url: str) -> AsyncIterator[Redis]:
    """A plain client for looking at what the caches wrote."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_admin: Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"clarion-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = [key async for key in redis_admin.scan_iter(match=prefix + "*")]
    if keys:
        await redis_admin.delete(*keys)


@pytest.fixture
async def make_redis_cache(redis_url: str, redis_prefix: str) -> AsyncIterator[CacheFactory]:
    """Factory: each call is another server instance, with its own client, on this test's keys; all closed after."""
    caches: list[RedisCache] = []

    def make(*, ttl_s: float = 300) -> Cache:
        cache = RedisCache(Redis.from_url(redis_url), prefix=redis_prefix, ttl_s=ttl_s)
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        await cache.close()


@pytest.fixture(params=BACKENDS)
def make_cache(request: pytest.FixtureRequest) -> CacheFactory:
    """Factory of caches of one backend (the test runs once per backend)."""
    if request.param == "redis":
        make_redis: CacheFactory = request.getfixturevalue("make_redis_cache")
        return make_redis

    def make_memory(*, ttl_s: float = 300) -> Cache:
        return MemoryCache(ttl_s=ttl_s)

    return make_memory


@pytest.fixture(params=BACKENDS)
def two_instances(request: pytest.FixtureRequest) -> tuple[Cache, Cache]:
    """Two server instances' view of one cache: two RedisCaches with their own clients, or, in local mode (one
    process), its one MemoryCache twice."""
    if request.param == "redis":
        make_redis: CacheFactory = request.getfixturevalue("make_redis_cache")
        return make_redis(), make_redis()
    cache = MemoryCache()
    return cache, cache


@pytest.fixture
def captured_logs() -> Iterator[list[structlog.typing.EventDict]]:
    """The events logged during the test."""
    with structlog.testing.capture_logs() as logs:
        yield logs


async def test_a_miss_loads_and_stores_and_a_hit_does_not_load(make_cache: CacheFactory) -> None:
    cache = make_cache()
    row = Row(b"user-1")
    assert await cache.read_through("user:u1", "", row.load) == b"user-1"
    assert await cache.read_through("user:u1", "", row.load) == b"user-1"
    assert row.loads == 1


async def test_none_is_not_cached(make_cache: CacheFactory) -> None:
    cache = make_cache()
    row = Row(None)
    assert await cache.read_through("user:u1", "", row.load) is None
    row.value = b"created"
    assert await cache.read_through("user:u1", "", row.load) == b"created"
    assert row.loads == 2


async def test_the_fields_of_a_key_are_cached_independently(make_cache: CacheFactory) -> None:
    cache = make_cache()
    latest, v1 = Row(b"v2 body"), Row(b"v1 body")
    assert await cache.read_through("template:WEEKLY_DIGEST", "latest", latest.load) == b"v2 body"
    assert await cache.read_through("template:WEEKLY_DIGEST", "v1", v1.load) == b"v1 body"
    assert await cache.read_through("template:WEEKLY_DIGEST", "latest", latest.load) == b"v2 body"
    assert await cache.read_through("template:WEEKLY_DIGEST", "v1", v1.load) == b"v1 body"
    assert (latest.loads, v1.loads) == (1, 1)


async def test_invalidate_drops_every_field_of_the_key_and_no_other_key(make_cache: CacheFactory) -> None:
    cache = make_cache()
    latest, v1, other = Row(b"latest"), Row(b"v1"), Row(b"other")
    for _ in range(2):
        await cache.read_through("template:A", "latest", latest.load)
        await cache.read_through("template:A", "v1", v1.load)
        await cache.read_through("template:B", "latest", other.load)
        await cache.invalidate("template:A")
    assert (latest.loads, v1.loads, other.loads) == (2, 2, 1)


async def test_an_invalidate_on_one_instance_reaches_the_other(make_redis_cache: CacheFactory) -> None:
    one, two = make_redis_cache(), make_redis_cache()
    row = Row(b"old")
    assert await one.read_through("user:u1", "", row.load) == b"old"
    assert await two.read_through("user:u1", "", row.load) == b"old"
    assert row.loads == 1, "the second instance read what the first stored"
    row.value = b"new"
    await one.invalidate("user:u1")
    assert await two.read_through("user:u1", "", row.load) == b"new"
    assert await one.read_through("user:u1", "", row.load) == b"new"
    assert row.loads == 2


async def test_a_load_that_started_before_an_invalidate_is_returned_but_not_stored(
    two_instances: tuple[Cache, Cache],
) -> None:
    reader, writer = two_instances
    row = Row(b"old")
    slow = GatedLoad(row)
    read = asyncio.create_task(reader.read_through("user:u1", "", slow))
    await slow.started.wait()
    # The writer commits and invalidates while the reader holds the old row.
    row.value = b"new"
    await writer.invalidate("user:u1")
    slow.release.set()
    assert await read == b"old", "its own caller gets what it loaded: that read ran before the write"
    assert await writer.read_through("user:u1", "", row.load) == b"new"
    assert await reader.read_through("user:u1", "", row.load) == b"new"
    assert row.loads == 2, "the old row was not stored; the first read after the invalidate loaded and stored"


async def test_of_two_loads_in_flight_only_the_one_that_started_after_the_invalidate_is_stored(
    two_instances: tuple[Cache, Cache],
) -> None:
    one, two = two_instances
    row = Row(b"old")
    before, after = GatedLoad(row), GatedLoad(row)
    stale = asyncio.create_task(one.read_through("user:u1", "", before))
    await before.started.wait()
    row.value = b"new"
    await two.invalidate("user:u1")
    fresh = asyncio.create_task(two.read_through("user:u1", "", after))
    await after.started.wait()
    after.release.set()
    assert await fresh == b"new"
    before.release.set()
    assert await stale == b"old"
    assert await one.read_through("user:u1", "", row.load) == b"new"
    assert row.loads == 2, "the fresh load was stored and the stale one did not overwrite it"


async def test_a_value_expires_after_the_ttl(make_cache: CacheFactory) -> None:
    cache = make_cache(ttl_s=0.2)
    row = Row(b"value")
    await cache.read_through("user:u1", "", row.load)
    await cache.read_through("user:u1", "", row.load)
    assert row.loads == 1
    await asyncio.sleep(0.3)
    await cache.read_through("user:u1", "", row.load)
    assert row.loads == 2


async def test_storing_another_field_does_not_extend_a_value_past_its_ttl(make_cache: CacheFactory) -> None:
    cache = make_cache(ttl_s=0.3)
    first, second = Row(b"v1"), Row(b"v2")
    await cache.read_through("template:A", "v1", first.load)
    await asyncio.sleep(0.2)
    await cache.read_through("template:A", "v2", second.load)
    await asyncio.sleep(0.2)
    await cache.read_through("template:A", "v1", first.load)
    assert first.loads == 2, "a value is never served longer than the TTL, even if its hash keeps being written"


async def test_every_redis_key_the_cache_writes_expires(
    make_redis_cache: CacheFactory, redis_admin: Redis, redis_prefix: str
) -> None:
    cache = make_redis_cache(ttl_s=60)
    await cache.read_through("user:u1", "", Row(b"value").load)
    await cache.read_through("user:u2", "", Row(None).load)
    await cache.invalidate("user:u3")
    keys = [key async for key in redis_admin.scan_iter(match=redis_prefix + "*")]
    assert len(keys) == 4, "user:u1's hash and generation, user:u2's and user:u3's generations"
    for key in keys:
        assert 0 < await redis_admin.pttl(key) <= 120_000


async def test_a_redis_that_is_down_falls_through_to_load_without_raising(
    captured_logs: list[structlog.typing.EventDict],
) -> None:
    cache = create_cache(f"redis://127.0.0.1:{free_port()}/0")
    assert isinstance(cache, RedisCache)
    row = Row(b"value")
    try:
        started_at = time.monotonic()
        assert await cache.read_through("user:u1", "", row.load) == b"value"
        assert await cache.read_through("user:u1", "", row.load) == b"value"
        await cache.invalidate("user:u1")
        assert time.monotonic() - started_at < 3 * BOUNDED_S
    finally:
        await cache.close()
    assert row.loads == 2
    events = [(log["event"], log["log_level"]) for log in captured_logs]
    assert events == [("cache_unavailable", "warning")] * 2 + [("cache_invalidate_failed", "error")]


async def test_a_redis_that_never_answers_costs_at_most_the_timeout(
    silent_port: int, captured_logs: list[structlog.typing.EventDict]
) -> None:
    # A client with redis-py's defaults (no socket timeout, retries with backoff): the cache's own bound holds.
    cache = RedisCache(Redis.from_url(f"redis://127.0.0.1:{silent_port}/0"))
    try:
        started_at = time.monotonic()
        assert await cache.read_through("user:u1", "", Row(b"value").load) == b"value"
        assert time.monotonic() - started_at < BOUNDED_S
        started_at = time.monotonic()
        await cache.invalidate("user:u1")
        assert time.monotonic() - started_at < BOUNDED_S
    finally:
        await cache.close()
    assert [log["event"] for log in captured_logs] == ["cache_unavailable", "cache_invalidate_failed"]


async def test_the_memory_cache_evicts_the_least_recently_used_key_beyond_max_entries() -> None:
    cache = MemoryCache(max_entries=2)
    rows = {name: Row(name.encode()) for name in ("a", "b", "c")}
    await cache.read_through("a", "", rows["a"].load)
    await cache.read_through("b", "", rows["b"].load)
    await cache.read_through("a", "", rows["a"].load)  # a is now the most recently used
    await cache.read_through("c", "", rows["c"].load)  # evicts b
    for name in ("c", "a", "b"):  # hits first: reloading b evicts again
        await cache.read_through(name, "", rows[name].load)
    assert {name: row.loads for name, row in rows.items()} == {"a": 1, "b": 2, "c": 1}


async def test_create_cache_uses_redis_when_given_a_url_and_memory_otherwise(redis_url: str) -> None:
    assert isinstance(create_cache(None), MemoryCache)
    cache = create_cache(redis_url)
    assert isinstance(cache, RedisCache)
    await cache.close()


async def test_a_client_that_decodes_responses_is_refused() -> None:
    client = Redis(decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisCache(client)
    await client.aclose()
