"""Who is calling: the Authenticator that turns a call's `authorization: Bearer <key>` into a caller allowed to
call the method (the scopes are in keys/scopes.py), the server interceptor that applies it, the caller's project for
the call, and the client interceptor that sends a key.

Lookups are cached in-process for CLARION_API_KEY_CACHE_TTL_S (30 s): a revoked key stops working on every
instance within that bound, and the database sees one query per key per instance and TTL. The secret is checked
against the cached hash on every call, in constant time. The key format and hashing are in keys/tokens.py.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import grpc
import structlog
from pydantic import SecretStr

from clarion.core.call_details import with_metadata
from clarion.core.config import Settings
from clarion.core.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from clarion.core.interceptors import StreamBehavior, UnaryBehavior, parse_request
from clarion.core.logging import get_logger
from clarion.keys import user_tokens
from clarion.keys.quotas import KeyedRateLimiter
from clarion.keys.scopes import (
    CREATE_USER_TOKEN,
    DEFAULT_PROJECT,
    READ_METHODS,
    USER_TOKEN_METHODS,
    Scope,
    broader,
    grants,
    permits,
    required_scope,
)
from clarion.keys.tokens import LAST_USED_RESOLUTION_S, hash_secret, is_service_key, parse_key, require_pepper

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key as the database holds it: no secret, only its keyed hash."""

    key_id: str
    name: str
    secret_hash: bytes
    scopes: frozenset[str]
    revoked: bool
    project_id: str = DEFAULT_PROJECT


class KeyStore(Protocol):
    """Where keys live (clarion.keys.repository.SqlKeyStore in production)."""

    async def find(self, key_id: str) -> StoredKey | None:
        """The key with this id, revoked or not; None when there is none."""
        ...

    async def touch(self, key_id: str) -> None:
        """Record that the key was just used."""
        ...


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, its name, its scopes and the project it acts in. For a user token, the key
    that made it, no scopes, and the one user whose inbox the token opens (`user_id`)."""

    key_id: str
    name: str
    scopes: frozenset[str]
    project_id: str = DEFAULT_PROJECT
    user_id: str = ""  # set for a user token only
    expires_at: float | None = None  # a user token's expiry (Unix seconds)

    def allows(self, scope: Scope) -> bool:
        """Whether this caller holds `scope`, itself or through a broader one (admin holds them all)."""
        return grants(self.scopes, scope)

    @property
    def quota_key(self) -> str:
        """Whose rate limit the call spends: the key's, or for a user token that user's own (a project's end users
        must not share one bucket)."""
        return f"{self.key_id}/{self.user_id}" if self.user_id else self.key_id


# The caller of the call being handled, set by AuthInterceptor; None for open services and with keys off.
_CALLER: ContextVar[Principal | None] = ContextVar("clarion_caller", default=None)


@dataclass(frozen=True, slots=True)
class CallerProject:
    """Where the current call acts: `project_id` for what it makes and changes, and the projects it may read
    (None: every project)."""

    project_id: str
    readable: str | None


def current_caller() -> Principal | None:
    """The key of the call being handled; None for open services and with keys off."""
    return _CALLER.get()


def caller_project() -> CallerProject:
    """The current call's project: its key's. With keys off (CLARION_AUTH_REQUIRED=false) every caller is trusted:
    it makes things in the default project and reads every project."""
    principal = _CALLER.get()
    if principal is None:
        return CallerProject(DEFAULT_PROJECT, None)
    reads_all = principal.allows(Scope.READ_ALL_PROJECTS)
    return CallerProject(principal.project_id, None if reads_all else principal.project_id)


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The token of the first `authorization` header: None when there is none, "" when it is not `Bearer <token>`."""
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = value.strip().partition(" ") if isinstance(value, str) else ("", "", "")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def _invalid(message: str = "the API key is not valid") -> Unauthenticated:
    return Unauthenticated(message, reason="API_KEY_INVALID")


class Authenticator:
    """Turns a call's `authorization` metadata into a Principal allowed to call the method, or a typed error:
    UNAUTHENTICATED (missing, malformed, unknown, wrong secret, revoked), PERMISSION_DENIED (scope),
    RESOURCE_EXHAUSTED (the key's quota, with RetryInfo)."""

    def __init__(
        self,
        store: KeyStore,
        *,
        pepper: SecretStr,
        cache_ttl_s: float = 30.0,
        rate_per_s: float = 0.0,
        burst: int = 1,
        service_rate_per_s: float = 0.0,
        service_burst: int = 1,
        touch_interval_s: float = LAST_USED_RESOLUTION_S,
        clock: Callable[[], float] = time.monotonic,
        max_cached: int = 10_000,
    ) -> None:
        self._store = store
        self._pepper = pepper
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._max_cached = max_cached
        # Unknown ids are cached too, so a flood of made-up keys costs one query per id and TTL, not one per call.
        self._cache: OrderedDict[str, tuple[float, StoredKey | None]] = OrderedDict()
        self._limiter = KeyedRateLimiter(rate_per_s=rate_per_s, burst=burst, clock=clock) if rate_per_s > 0 else None
        # Service keys get a quota of their own: one carries every project's sends, so it needs more than one
        # client's, yet a leaked or looping one is still held back.
        self._service_limiter = (
            KeyedRateLimiter(rate_per_s=service_rate_per_s, burst=service_burst, clock=clock)
            if service_rate_per_s > 0
            else None
        )
        # last_used_at is written at most once per key and interval from each process, off the request's path.
        self._touch_interval_s = touch_interval_s
        self._touched: dict[str, float] = {}
        self._touches: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, store: KeyStore, settings: Settings) -> Authenticator:
        """An authenticator configured by the CLARION_API_KEY_* and CLARION_SERVICE_KEY_* settings."""
        return cls(
            store,
            pepper=require_pepper(settings),
            cache_ttl_s=settings.api_key_cache_ttl_s,
            rate_per_s=settings.api_key_rate_per_s,
            burst=settings.api_key_burst,
            service_rate_per_s=settings.service_key_rate_per_s,
            service_burst=settings.service_key_burst,
        )

    async def check(self, method: str, metadata: tuple[tuple[str, str | bytes], ...] | None) -> Principal | None:
        """The caller of `method`, allowed to call it now; None for the open services. Raises the typed errors."""
        scope = required_scope(method)
        if scope is None:
            return None
        token = bearer_token(metadata)
        if token and token.startswith(user_tokens.USER_TOKEN_PREFIX):
            return self._throttle(await self._user_principal(token, method))
        principal = await self.authenticate(token)
        # The scope itself first: `permits` (a narrower alternative, or a key-only method) only when it is missing.
        if not (grants(principal.scopes, scope) or permits(principal.scopes, method)):
            wider = broader(scope)
            which = "which include it" if len(wider) > 1 else "which includes it"
            also = f" (or {' or '.join(repr(other.value) for other in wider)}, {which})" if wider else ""
            reading = f"; {Scope.READ.value!r} is enough to read" if method in READ_METHODS else ""
            raise PermissionDenied(
                f"this API key lacks the {scope.value!r} scope{also} that {method} needs{reading}",
                reason="SCOPE_MISSING",
                metadata={"scope": scope.value, "method": method},
            )
        return self._throttle(principal)

    async def _user_principal(self, token: str, method: str) -> Principal:
        """The Principal of a user token allowed to call `method`, or the typed error."""
        claims = user_tokens.read(self._pepper, token)
        if claims is None:
            raise Unauthenticated("the user token is not valid", reason="USER_TOKEN_INVALID")
        if claims.expires_at <= time.time():
            raise Unauthenticated("the user token has expired; ask for a new one", reason="USER_TOKEN_EXPIRED")
        stored = await self._lookup(claims.key_id)
        if stored is None or stored.revoked or not permits(stored.scopes, CREATE_USER_TOKEN):
            raise Unauthenticated(
                "the key that made this user token is revoked or may no longer make user tokens",
                reason="USER_TOKEN_REVOKED",
            )
        if method not in USER_TOKEN_METHODS:
            raise PermissionDenied(
                f"a user token may call only its own inbox's methods, not {method}",
                reason="USER_TOKEN_SCOPE",
                metadata={"method": method},
            )
        return Principal(
            stored.key_id,
            stored.name,
            frozenset(),
            stored.project_id,
            user_id=claims.user_id,
            expires_at=float(claims.expires_at),
        )

    async def still_valid(self, principal: Principal) -> bool:
        """Whether a caller admitted earlier may go on (a stream held open): its key not revoked since (within the
        key cache's TTL), and for a user token, not expired and its key still allowed to make tokens."""
        stored = await self._lookup(principal.key_id)
        if stored is None or stored.revoked:
            return False
        if not principal.user_id:
            return True
        expired = principal.expires_at is not None and principal.expires_at <= time.time()
        return not expired and permits(stored.scopes, CREATE_USER_TOKEN)

    def mint_user_token(self, principal: Principal, user_id: str, expires_at: int) -> str:
        """A user token for `user_id`'s inbox in the caller's project, made by the caller's key."""
        claims = user_tokens.UserClaims(user_id, principal.project_id, principal.key_id, expires_at)
        return user_tokens.mint(self._pepper, claims)

    async def authenticate(self, token: str | None) -> Principal:
        """The key's Principal, or UNAUTHENTICATED saying why not (never repeating the key)."""
        if token is None:
            raise Unauthenticated(
                "an API key is required: send the header `authorization: Bearer KEY`", reason="API_KEY_MISSING"
            )
        if not token:
            raise _invalid("the authorization header must read `Bearer KEY`")
        parsed = parse_key(token)
        if parsed is None:
            raise _invalid()
        stored = await self._lookup(parsed.key_id)
        expected = hash_secret(self._pepper, parsed.key_id, parsed.secret)
        # Compare even when the id is unknown, so a wrong id and a wrong secret take the same time.
        matches = hmac.compare_digest(expected, stored.secret_hash if stored else bytes(len(expected)))
        if stored is None or not matches:
            raise _invalid()
        # Only a caller who holds the secret learns that the key is revoked.
        if stored.revoked:
            raise Unauthenticated(
                f"API key {stored.key_id} has been revoked",
                reason="API_KEY_REVOKED",
                metadata={"key_id": stored.key_id},
            )
        self._touch(stored.key_id)
        return Principal(stored.key_id, stored.name, stored.scopes, stored.project_id)

    async def _lookup(self, key_id: str) -> StoredKey | None:
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self._cache_ttl_s:
            self._cache.move_to_end(key_id)
            return cached[1]
        stored = await self._store.find(key_id)
        self._cache[key_id] = (now, stored)
        self._cache.move_to_end(key_id)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return stored

    def _throttle(self, principal: Principal) -> Principal:
        """`principal`, or RESOURCE_EXHAUSTED when its quota is spent."""
        limiter = self._service_limiter if is_service_key(principal.key_id) else self._limiter
        if limiter is None:
            return principal
        wait_s = limiter.acquire(principal.quota_key)
        if wait_s > 0:
            raise ResourceExhausted(
                f"API key {principal.key_id} is over its rate limit of {limiter.rate_per_s:g} calls per second",
                retry_after_s=wait_s,
                reason="API_KEY_RATE_LIMITED",
                metadata={"key_id": principal.key_id, "rate_per_s": f"{limiter.rate_per_s:g}"},
            )
        return principal

    def _touch(self, key_id: str) -> None:
        now = self._clock()
        last = self._touched.get(key_id)
        if last is not None and now - last < self._touch_interval_s:
            return
        self._touched[key_id] = now
        task = asyncio.create_task(self._store.touch(key_id), name=f"touch-api-key-{key_id}")
        self._touches.add(task)
        task.add_done_callback(self._touched_done)

    def _touched_done(self, task: asyncio.Task[None]) -> None:
        self._touches.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Losing a last-used time is not worth failing a call for.
            log.warning("api_key_touch_failed", error=str(task.exception()))

    async def close(self) -> None:
        """Let pending last-used writes finish."""
        if self._touches:
            await asyncio.gather(*self._touches, return_exceptions=True)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the API key of every call but health and reflection, before the request is parsed: a caller without
    a key costs no decoding. It sits inside the error-mapping interceptor, so its typed errors reach the client as
    statuses with ErrorInfo and the request id."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or required_scope(method) is None:
            return handler
        authenticator, metadata = self._authenticator, handler_call_details.invocation_metadata
        deserialize = handler.request_deserializer

        async def admit() -> None:
            principal = await authenticator.check(method, metadata)
            if principal is not None:
                structlog.contextvars.bind_contextvars(api_key_id=principal.key_id)
            _CALLER.set(principal)  # this call's task only

        # The request stays bytes until the key is checked (the error-mapping interceptor outside passes bytes on).
        if handler.unary_unary is not None:
            behavior = cast(UnaryBehavior, handler.unary_unary)

            async def guarded(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await admit()
                return await behavior(parse_request(request, deserialize), context)

            return grpc.unary_unary_rpc_method_handler(
                guarded, request_deserializer=None, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None:
            stream = cast(StreamBehavior, handler.unary_stream)

            async def guarded_stream(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                await admit()
                async for response in stream(parse_request(request, deserialize), context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(
                guarded_stream, request_deserializer=None, response_serializer=handler.response_serializer
            )
        # Clarion has no client-streaming RPC; one added is refused (UNIMPLEMENTED) until it is guarded too.
        log.error("unguarded_streaming_rpc_refused", rpc=method)
        return None


# --- the client side ---

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def server_auth(authenticator: Authenticator | None) -> AuthInterceptor | None:
    """The interceptor a GrpcServer checks keys with; None (no keys checked) for no authenticator."""
    return AuthInterceptor(authenticator) if authenticator is not None else None


class _Bearer:
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        pairs = list(details.metadata or ())
        if not any(key == "authorization" for key, _ in pairs):
            pairs.append(self._header)
        return with_metadata(details, pairs)


class BearerAuth(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    """Adds `authorization: Bearer <token>` to every unary call of a channel that does not carry its own."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Req], Awaitable[grpc.aio.UnaryUnaryCall[Req, Resp]]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Req,
    ) -> grpc.aio.UnaryUnaryCall[Req, Resp]:
        return await continuation(self._with_token(client_call_details), request)


class BearerAuthStreams(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    """The same for server-streaming calls (WatchInbox). A separate class: a grpc.aio channel files each
    interceptor under the first kind it is an instance of."""

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Req], Awaitable[grpc.aio.UnaryStreamCall[Req, Resp]]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Req,
    ) -> grpc.aio.UnaryStreamCall[Req, Resp]:
        return await continuation(self._with_token(client_call_details), request)


def bearer_auth(token: str) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors that send `token` on every unary and server-streaming call of a channel."""
    return [BearerAuth(token), BearerAuthStreams(token)]
