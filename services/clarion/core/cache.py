"""A read-through cache of serialized protobufs that never serves a value loaded before the latest invalidate.

The race it closes: a reader misses and loads the old row, a writer commits and invalidates, then the reader stores
the old row and everyone reads it until the TTL. So each key has a generation: a reader notes it before `load()`
and stores the result only if it is unchanged (atomically), and `invalidate` changes it while dropping the values.

Usage: `value = await cache.read_through(f"user:{user_id}", "", load)`; after the write *commits*,
`await cache.invalidate(f"user:{user_id}")` (before the commit a reader could still load and cache the old row).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from clarion.core.logging import get_logger
from clarion.core.metrics import CACHE_REQUESTS

log = get_logger(__name__)

# Beyond this a Redis call counts as failed: the request goes to the database instead of waiting.
REDIS_TIMEOUT_S = 0.5
# What a down or wedged Redis raises: redis' own errors, socket errors and the timeout (a subclass of OSError).
_UNAVAILABLE = (RedisError, OSError)

Loader = Callable[[], Awaitable[bytes | None]]


class Cache(Protocol):
    """A read-through cache of bytes; `key` groups related fields (`template:WEEKLY_DIGEST` → `latest`, `v1`…)."""

    async def read_through(self, key: str, field: str, load: Loader) -> bytes | None:
        """The cached value, or `await load()` (cached unless None, or unless `key` was invalidated meanwhile)."""
        ...

    async def invalidate(self, key: str) -> None:
        """Drop every field of `key`: later reads load afresh and loads already running won't store.

        Never raises: a failure is logged and the old values then live at most the TTL.
        """
        ...

    async def close(self) -> None:
        """Release the connection, if any."""
        ...


# KEYS: values hash, generation. ARGV: field, a fresh token, generation TTL in ms. Returns {1, value} on a hit, else
# {0, generation}, creating the generation when it is missing so that every reader gets a token to compare.
_READ = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if value then return {1, value} end
local generation = redis.call('GET', KEYS[2])
if not generation then
  generation = ARGV[2]
  redis.call('SET', KEYS[2], generation, 'PX', ARGV[3])
end
return {0, generation}
"""
# KEYS: values hash, generation. ARGV: field, value, the generation read before load(), value TTL in ms.
# The TTL is set by the first field stored and never extended, so no value outlives it even if invalidate failed.
_STORE = """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
"""
# KEYS: values hash, generation. ARGV: a fresh token, generation TTL in ms.
_INVALIDATE = """
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""


def _new_generation() -> str:
    # A random token, not an INCR counter: a counter whose key expired or was evicted starts again at the value a
    # slow reader noted (A-B-A) and lets it store; a token never repeats.
    return uuid.uuid4().hex


class RedisCache:
    """A cache shared by every server instance: a Redis hash per key plus a generation key beside it.

    `close()` closes `client`, so give each cache its own (`create_cache` does). The client must return bytes
    (`decode_responses=False`, the default). Every call is bounded by `timeout_s`; when Redis fails, reads fall
    through to `load()` and invalidations are logged, so the cache never fails a request.
    """

    def __init__(
        self, client: Redis, *, prefix: str = "clarion:", ttl_s: float = 300, timeout_s: float = REDIS_TIMEOUT_S
    ) -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisCache needs a client with decode_responses=False: values are protobuf bytes")
        self._client = client
        self._prefix = prefix
        self._ttl_ms = max(1, round(ttl_s * 1000))
        # The generation only has to outlive a load; longer than the values keeps slow loads storable.
        self._generation_ttl_ms = 2 * self._ttl_ms
        self._timeout_s = timeout_s
        self._read = client.register_script(_READ)
        self._store = client.register_script(_STORE)
        self._invalidate = client.register_script(_INVALIDATE)

    def _keys(self, key: str) -> list[str]:
        # The braces are a Redis Cluster hash tag: both keys land in one slot, as a script touching both requires.
        values = self._prefix + "{" + key + "}"
        return [values, values + ":gen"]

    async def read_through(self, key: str, field: str, load: Loader) -> bytes | None:
        """The cached value, or `await load()`, stored only if `key` was not invalidated since the load started."""
        keys = self._keys(key)
        try:
            async with asyncio.timeout(self._timeout_s):
                hit, payload = await self._read(keys=keys, args=[field, _new_generation(), self._generation_ttl_ms])
        except _UNAVAILABLE as exc:
            _count(key, "error")
            log.warning("cache_unavailable", operation="read", key=key, error=repr(exc))
            return await load()
        if hit:
            _count(key, "hit")
            cached: bytes = payload
            return cached
        _count(key, "miss")
        value = await load()
        if value is not None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._store(keys=keys, args=[field, value, payload, self._ttl_ms])
            except _UNAVAILABLE as exc:
                log.warning("cache_unavailable", operation="store", key=key, error=repr(exc))
        return value

    async def invalidate(self, key: str) -> None:
        """Drop every field of `key` and change its generation, atomically; on failure log an error, don't raise."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._invalidate(keys=self._keys(key), args=[_new_generation(), self._generation_ttl_ms])
        except _UNAVAILABLE as exc:
            # Readers may see the old value until the TTL expires it; that is the bound we accept.
            log.error("cache_invalidate_failed", key=key, error=repr(exc))

    async def close(self) -> None:
        """Close the Redis client and its connections."""
        await self._client.aclose()


@dataclass
class _Loads:
    """The loads of one key in flight, and how many times it was invalidated while they ran."""

    generation: int = 0
    count: int = 0


class MemoryCache:
    """An in-process cache for local mode (one process), least recently used keys evicted beyond `max_entries`.

    No locks: everything runs on one event loop, and the only await is `load()`, so the generation check and the
    store that follows it run without another coroutine in between. Not for use across threads.
    """

    def __init__(self, *, ttl_s: float = 300, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        # key -> field -> (expires at, on the monotonic clock; value), least recently used key first.
        self._values: OrderedDict[str, dict[str, tuple[float, bytes]]] = OrderedDict()
        self._size = 0
        # Generations exist only while loads run: a key nobody is loading has nothing to protect, and a dict of every
        # key ever invalidated would grow without bound.
        self._loads: dict[str, _Loads] = {}

    async def read_through(self, key: str, field: str, load: Loader) -> bytes | None:
        """The cached value, or `await load()`, stored only if `key` was not invalidated since the load started."""
        fields = self._values.get(key)
        entry = fields.get(field) if fields is not None else None
        if entry is not None:
            expires_at, value = entry
            if time.monotonic() < expires_at:
                self._values.move_to_end(key)
                _count(key, "hit")
                return value
            self._drop(key, field)
        _count(key, "miss")
        loads = self._loads.setdefault(key, _Loads())
        started_at = loads.generation
        loads.count += 1
        try:
            loaded = await load()
        finally:
            loads.count -= 1
            if loads.count == 0:
                del self._loads[key]
        if loaded is not None and loads.generation == started_at:
            self._put(key, field, loaded)
        return loaded

    async def invalidate(self, key: str) -> None:
        """Drop every field of `key`; loads of it already running will not store their result."""
        self._size -= len(self._values.pop(key, {}))
        if key in self._loads:
            self._loads[key].generation += 1

    async def close(self) -> None:
        """Forget everything."""
        self._values.clear()
        self._size = 0

    def _put(self, key: str, field: str, value: bytes) -> None:
        fields = self._values.setdefault(key, {})
        if field not in fields:
            self._size += 1
        fields[field] = (time.monotonic() + self._ttl_s, value)
        self._values.move_to_end(key)
        while self._size > self._max_entries:
            _, evicted = self._values.popitem(last=False)
            self._size -= len(evicted)

    def _drop(self, key: str, field: str) -> None:
        fields = self._values[key]
        del fields[field]
        self._size -= 1
        if not fields:
            del self._values[key]


def _count(key: str, result: str) -> None:
    # The cache's name is the key's prefix (`user`, `template`): a handful of values, never the id after it.
    CACHE_REQUESTS.labels(cache=key.partition(":")[0], result=result).inc()


def create_cache(redis_url: str | None, *, ttl_s: float = 300) -> Cache:
    """A RedisCache on `redis_url` (several server instances), else a MemoryCache (local mode, one process)."""
    if not redis_url:
        return MemoryCache(ttl_s=ttl_s)
    client = Redis.from_url(
        redis_url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        # One immediate retry covers a pooled connection Redis dropped; the default backs off for seconds.
        retry=Retry(NoBackoff(), 1),
    )
    return RedisCache(client, ttl_s=ttl_s)
