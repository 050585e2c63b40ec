"""NotificationService's view of UserService and TemplateService: gRPC clients with deadlines, a retry policy and a
circuit breaker, whose failures arrive as our typed domain errors."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

import grpc
from google.protobuf import struct_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.trace import SpanKind
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from clarion.core.db import is_database_unavailable
from clarion.core.errors import (
    ClarionError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from clarion.core.logging import get_logger
from clarion.core.metrics import (
    BREAKER_CLOSED,
    BREAKER_HALF_OPEN,
    BREAKER_OPEN,
    BREAKER_STATE,
    DEPENDENCY_CALLS,
    DEPENDENCY_SECONDS,
)
from clarion.core.tracing import TracingClientInterceptor, rpc_attributes, tracer
from clarion.v1 import templates_pb2, templates_pb2_grpc, users_pb2, users_pb2_grpc

log = get_logger(__name__)
T = TypeVar("T")

# gRPC retries UNAVAILABLE by itself (a connection refused, a server draining): a few quick tries before the error
# counts against the breaker. Nothing else is retried: the other codes are answers, not accidents.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "clarion.v1.UserService"}, {"service": "clarion.v1.TemplateService"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
# Codes that mean the service is unwell, not that the request was wrong: these trip the breaker.
_FAILURES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED,
}


_BREAKER_STATES = {"closed": BREAKER_CLOSED, "half-opened": BREAKER_HALF_OPEN, "opened": BREAKER_OPEN}


def _breaker_gauge(name: str, event_type: str, event: Any) -> None:
    """purgatory's hook: mirror each breaker's state in clarion_circuit_breaker_state{breaker="client:<service>"}."""
    if event_type == "circuit_breaker_created":
        BREAKER_STATE.labels(breaker=f"client:{name}").set(BREAKER_CLOSED)
    elif event_type == "state_changed":
        BREAKER_STATE.labels(breaker=f"client:{name}").set(_BREAKER_STATES.get(event.state, BREAKER_CLOSED))


class DependencyFailed(Exception):
    """A call to another service failed in a way that says the service is unwell."""

    def __init__(self, service: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{service}: {code.name}: {details}")
        self.service = service
        self.code = code


def _rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def _details(status: status_pb2.Status | None) -> tuple[str, dict[str, str], list[FieldViolation]]:
    reason, metadata, violations = "", {}, []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations = [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    return reason, metadata, violations


def _rename(field: str, renames: dict[str, str]) -> str:
    """`data.app_name` → `message_data.app_name` for {"data": "message_data"}."""
    head, dot, rest = field.partition(".")
    return renames[head] + dot + rest if head in renames else field


def _renamed(violations: list[FieldViolation], field_prefix: dict[str, str]) -> list[FieldViolation]:
    return [FieldViolation(_rename(v.field, field_prefix), v.description) for v in violations]


def _with_fields_renamed(error: InvalidArgument, field_prefix: dict[str, str]) -> InvalidArgument:
    return InvalidArgument(
        error.message, violations=_renamed(error.violations, field_prefix), reason=error.reason, metadata=error.metadata
    )


# The answers that are the caller's mistake, not the service's: they pass through as our own typed errors.
_CLIENT_ERRORS: dict[grpc.StatusCode, type[ClarionError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}
_CODES = {code.value[0]: code for code in grpc.StatusCode}
# The same mistakes raised by a servicer of this process.
_ANSWERS = tuple(_CLIENT_ERRORS.values())


def _client_error(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None, field_prefix: dict[str, str]
) -> ClarionError | None:
    """A client-mistake answer as our typed error, its details kept and its fields renamed to the caller's request
    by `field_prefix`; None for any other code."""
    kind = _CLIENT_ERRORS.get(code)
    if kind is None:
        return None
    reason, metadata, violations = _details(status)
    if kind is InvalidArgument:
        return InvalidArgument(
            message, violations=_renamed(violations, field_prefix), reason=reason or None, metadata=metadata
        )
    return kind(message, reason=reason or None, metadata=metadata)


def translate(error: grpc.aio.AioRpcError, *, service: str, field_prefix: dict[str, str]) -> Exception:
    """A dependency's answer as our own error: client mistakes pass through with their details (fields renamed to
    the caller's request by `field_prefix`); a sick service becomes DependencyFailed."""
    code = error.code()
    if code in _FAILURES:
        return DependencyFailed(service, code, error.details() or "")
    message = error.details() or code.name
    return _client_error(code, message, _rich_status(error), field_prefix) or DependencyFailed(service, code, message)


def error_from_status(status: status_pb2.Status) -> ClarionError:
    """One item's error of a batch answer, as the typed error a single call would have raised; a code that is not
    about the request (the item ran out of time, the service failed) is Unavailable: ask again later."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    error = _client_error(code, status.message, status, {})
    if error is not None:
        return error
    reason, metadata, _ = _details(status)
    return Unavailable(status.message, retry_after_s=1.0, reason=reason or "DEPENDENCY_UNAVAILABLE", metadata=metadata)


def _unavailable(service: str, why: str, retry_after_s: float = 1.0) -> Unavailable:
    """The one UNAVAILABLE a caller gets when a service it needs is not answering."""
    return Unavailable(
        f"{service} {why}; retry later",
        retry_after_s=retry_after_s,
        reason="DEPENDENCY_UNAVAILABLE",
        metadata={"service": service},
    )


class _InProcessContext:
    """What a servicer sees of a call from its own process: no metadata, no peer. GetUser and RenderTemplate read
    nothing from their context; the rest of ServicerContext is deliberately absent, so a servicer that starts to
    need it fails loudly in the tests rather than quietly here."""

    def invocation_metadata(self) -> tuple[()]:
        return ()


_IN_PROCESS = cast(grpc.aio.ServicerContext[Any, Any], _InProcessContext())


class UserLookup(Protocol):
    async def GetUser(self, request: users_pb2.GetUserRequest, context: Any) -> users_pb2.User: ...

    async def BatchGetUsers(
        self, request: users_pb2.BatchGetUsersRequest, context: Any
    ) -> users_pb2.BatchGetUsersResponse: ...

    async def RemoveDevice(self, request: users_pb2.RemoveDeviceRequest, context: Any) -> Any: ...


class TemplateRendering(Protocol):
    async def RenderTemplate(
        self, request: templates_pb2.RenderTemplateRequest, context: Any
    ) -> templates_pb2.RenderTemplateResponse: ...

    async def BatchRenderTemplates(
        self, request: templates_pb2.BatchRenderTemplatesRequest, context: Any
    ) -> templates_pb2.BatchRenderTemplatesResponse: ...


# The most items per batch call (the services' MAX_BATCH): longer lists are split.
USERS_PER_CALL = 1000
RENDERS_PER_CALL = 100


def render_request(
    *, template_key: str, version: int, locale: str, data: dict[str, Any]
) -> templates_pb2.RenderTemplateRequest:
    """A RenderTemplateRequest for `data` as plain Python values."""
    struct = struct_pb2.Struct()
    struct.update(data)
    return templates_pb2.RenderTemplateRequest(template_key=template_key, version=version, locale=locale, data=struct)


class ServiceClients:
    """Clients of UserService and TemplateService behind one circuit breaker each. `interceptors` wrap every call
    (keys.auth.BearerAuth: the credential the services present to each other)."""

    def __init__(
        self,
        *,
        users_address: str,
        templates_address: str,
        timeout_s: float,
        breaker_failure_threshold: int,
        breaker_reset_s: float,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        options = [
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            # A batch answer may be large: take what the services may send (CLARION_GRPC_MAX_MESSAGE_BYTES).
            ("grpc.max_receive_message_length", max_message_bytes),
            # With headless Kubernetes Services the name resolves to every pod: spread calls over all of them.
            ("grpc.lb_policy_name", "round_robin"),
            # A restarted service is found again within seconds, not gRPC's default of up to two minutes.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        # Tracing outermost: its span covers the whole call, retries and the credential included.
        chain = [TracingClientInterceptor(), *interceptors]
        self._users_channel = grpc.aio.insecure_channel(users_address, options=options, interceptors=chain)
        self._templates_channel = grpc.aio.insecure_channel(templates_address, options=options, interceptors=chain)
        self._users = users_pb2_grpc.UserServiceStub(self._users_channel)
        self._templates = templates_pb2_grpc.TemplateServiceStub(self._templates_channel)
        self._timeout_s = timeout_s
        # A batch does up to a hundred times the work of one call, and its renders share a second of time.
        self._batch_timeout_s = timeout_s * 2 + 1.0
        self._reset_s = breaker_reset_s
        # purgatory counts consecutive failures; answers that are client errors (ClarionError) don't count.
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=breaker_failure_threshold, default_ttl=breaker_reset_s, exclude=[ClarionError]
        )
        self._breakers.add_listener(_breaker_gauge)
        self._local_users: UserLookup | None = None
        self._local_templates: TemplateRendering | None = None

    def call_in_process(self, *, users: UserLookup | None = None, templates: TemplateRendering | None = None) -> None:
        """Call these servicers directly instead of over the network: they run in this process (`serve all`,
        `clarion up`). Same contract — the request and response messages, the typed errors — without a gRPC
        client, server, interceptors and a loopback connection per call: that transport was most of an accept's
        CPU (bench/RESULTS.md). No breaker either: there is no network to fail."""
        self._local_users = users or self._local_users
        self._local_templates = templates or self._local_templates

    async def _in_process(self, service: str, method: str, call: Callable[[], Awaitable[T]], timeout_s: float) -> T:
        """A call to a servicer of this process, answering as its gRPC twin would (docs/adr/0001): the same deadline;
        a client's mistake as the same typed error; anything else (its own UNAVAILABLE, PostgreSQL gone, a bug) as
        DependencyFailed, which the breaker counts and the caller sees as UNAVAILABLE, as over the network."""
        # One INTERNAL span where a remote call has a CLIENT and a SERVER span.
        with tracer().start_as_current_span(
            f"clarion.v1.{service}/{method}", kind=SpanKind.INTERNAL, attributes=rpc_attributes(service, method)
        ):
            try:
                async with asyncio.timeout(timeout_s):
                    return await call()
            except TimeoutError:
                raise DependencyFailed(service, grpc.StatusCode.DEADLINE_EXCEEDED, "did not answer in time") from None
            except _ANSWERS:
                raise  # an answer: the request was wrong (its fields are renamed by _call)
            except ClarionError as exc:
                raise DependencyFailed(service, exc.code, exc.message) from None
            except Exception as exc:
                if is_database_unavailable(exc):
                    raise DependencyFailed(
                        service, grpc.StatusCode.UNAVAILABLE, "its database is unavailable"
                    ) from None
                # Over gRPC the service's own interceptor would log this and answer INTERNAL.
                log.exception("dependency_unhandled_error", service=service, method=method)
                raise DependencyFailed(service, grpc.StatusCode.INTERNAL, type(exc).__name__) from None

    async def _call(
        self, service: str, call: Callable[[], Awaitable[T]], field_prefix: dict[str, str] | None = None
    ) -> T:
        try:
            async with await self._breakers.get_breaker(service):
                try:
                    return await call()
                except grpc.aio.AioRpcError as exc:
                    raise translate(exc, service=service, field_prefix=field_prefix or {}) from None
                except InvalidArgument as exc:  # from a servicer of this process
                    if not field_prefix:
                        raise
                    raise _with_fields_renamed(exc, field_prefix) from None
        except OpenedState as opened:
            retry_after_s = max(0.0, opened.opened_at + self._reset_s - time.time())
            raise _unavailable(service, "is unavailable (circuit open)", retry_after_s) from None
        except DependencyFailed as exc:
            log.warning("dependency_failed", service=service, code=exc.code.name)
            raise _unavailable(service, f"is unavailable ({exc.code.name})") from None

    async def _invoke(
        self, service: str, method: str, request: Message, field_prefix: dict[str, str] | None = None
    ) -> Any:
        """`service`'s `method` with `request`, one way whatever the transport (docs/adr/0001): in process when this
        process serves the service, else over gRPC (with its retry policy); either way the same deadline (batch
        methods get the longer one), the same breaker, the same typed errors and the same metrics."""
        timeout_s = self._batch_timeout_s if method.startswith("Batch") else self._timeout_s
        local: object = self._local_users if service == "UserService" else self._local_templates
        call: Callable[[], Awaitable[Any]]
        if local is not None:
            transport, handler = "in_process", getattr(local, method)
            call = functools.partial(
                self._in_process, service, method, functools.partial(handler, request, _IN_PROCESS), timeout_s
            )
        else:
            transport = "grpc"
            stub_method = getattr(self._users if service == "UserService" else self._templates, method)
            call = functools.partial(stub_method, request, timeout=timeout_s)
        started = time.perf_counter()
        outcome = "OK"
        try:
            return await self._call(service, call, field_prefix)
        except ClarionError as exc:
            outcome = exc.code.name
            raise
        finally:
            labels = {"service": service, "method": method, "transport": transport}
            DEPENDENCY_CALLS.labels(**labels, code=outcome).inc()
            DEPENDENCY_SECONDS.labels(**labels).observe(time.perf_counter() - started)

    async def get_user(self, user_id: str) -> users_pb2.User:
        """The user, or NotFound / Unavailable."""
        request = users_pb2.GetUserRequest(user_id=user_id)
        user: users_pb2.User = await self._invoke("UserService", "GetUser", request, {"user_id": "user_id"})
        return user

    async def render(
        self, *, template_key: str, version: int, locale: str, data: dict[str, Any]
    ) -> templates_pb2.RenderTemplateResponse:
        """The template rendered with `data`, or NotFound / FailedPrecondition (deleted) / InvalidArgument naming
        the request's fields (`message_data.x`) / Unavailable."""
        request = render_request(template_key=template_key, version=version, locale=locale, data=data)
        rendered: templates_pb2.RenderTemplateResponse = await self._invoke(
            "TemplateService", "RenderTemplate", request, {"data": "message_data"}
        )
        return rendered

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, users_pb2.User]:
        """The users among `user_ids` that exist, by id (BatchGetUsers); Unavailable when UserService is."""
        found: dict[str, users_pb2.User] = {}
        unique = list(dict.fromkeys(user_ids))
        for start in range(0, len(unique), USERS_PER_CALL):
            request = users_pb2.BatchGetUsersRequest(user_ids=unique[start : start + USERS_PER_CALL])
            response: users_pb2.BatchGetUsersResponse = await self._invoke("UserService", "BatchGetUsers", request)
            found.update((user.user_id, user) for user in response.users)
        return found

    async def render_many(
        self, requests: Sequence[templates_pb2.RenderTemplateRequest], *, field_prefix: dict[str, str] | None = None
    ) -> list[templates_pb2.RenderTemplateResponse | ClarionError]:
        """Each request rendered, or the typed error RenderTemplate would have raised for it (field names relative
        to the request, `data.x`, or renamed by `field_prefix`), in order (BatchRenderTemplates); Unavailable when
        TemplateService is."""
        results = await self._render_many(requests)
        if not field_prefix:
            return results
        return [_with_fields_renamed(r, field_prefix) if isinstance(r, InvalidArgument) else r for r in results]

    async def _render_many(
        self, requests: Sequence[templates_pb2.RenderTemplateRequest]
    ) -> list[templates_pb2.RenderTemplateResponse | ClarionError]:
        results: list[templates_pb2.RenderTemplateResponse | ClarionError] = []
        for start in range(0, len(requests), RENDERS_PER_CALL):
            chunk = list(requests[start : start + RENDERS_PER_CALL])
            try:
                response: templates_pb2.BatchRenderTemplatesResponse = await self._invoke(
                    "TemplateService", "BatchRenderTemplates", templates_pb2.BatchRenderTemplatesRequest(requests=chunk)
                )
            except Unavailable:
                if len(chunk) == 1:
                    raise
                # The batch as a whole failed (too large an answer, out of time): one at a time, so one
                # notification's problem stays its own.
                results += [await self._render_alone(request) for request in chunk]
                continue
            results += [
                item.rendered if item.HasField("rendered") else error_from_status(item.error)
                for item in response.results
            ]
        return results

    async def _render_alone(
        self, request: templates_pb2.RenderTemplateRequest
    ) -> templates_pb2.RenderTemplateResponse | ClarionError:
        try:
            rendered: templates_pb2.RenderTemplateResponse = await self._invoke(
                "TemplateService", "RenderTemplate", request
            )
        except ClarionError as exc:
            return exc
        return rendered

    async def remove_device(self, user_id: str, device_id: str) -> None:
        """Remove a user's device (an unregistered push token); a device already gone is fine."""
        request = users_pb2.RemoveDeviceRequest(user_id=user_id, device_id=device_id)
        with contextlib.suppress(NotFound):
            await self._invoke("UserService", "RemoveDevice", request)

    async def close(self) -> None:
        await self._users_channel.close()
        await self._templates_channel.close()
