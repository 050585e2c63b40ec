"""The one server interceptor: request id, trace span, access log, RPC metrics and the mapping of errors to gRPC
statuses."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_status import rpc_status
from opentelemetry.trace import Span, SpanKind

from clarion.core.db import is_database_unavailable
from clarion.core.errors import ClarionError, InvalidArgument, Unavailable, internal_status, to_status
from clarion.core.logging import get_logger
from clarion.core.metrics import RPC_HANDLED, RPC_SECONDS
from clarion.core.tracing import extract, record_grpc_code, rpc_attributes, split_method, tracer

log = get_logger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")

# Nothing was committed by the failed call (or its commit is what failed, and an idempotent retry finds it).
DATABASE_UNAVAILABLE = Unavailable(
    "the database is unavailable; retry shortly", retry_after_s=1.0, reason="DATABASE_UNAVAILABLE"
)

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def request_id_from(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    """The caller's `x-request-id` (Envoy always sets one) if it is sane, else a new UUID."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _REQUEST_ID.match(value):
            return value
    return str(uuid.uuid4())


StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]
# Streams of these services pass through untouched: health's Watch and reflection are grpcio's own.
_OWN_STREAMS = "/clarion."


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Binds the request id to every log line of a call, logs the call's outcome once, and turns exceptions
    into statuses: a ClarionError into its code with details, anything unexpected into a bare INTERNAL. Unary calls
    and Clarion's server-streaming calls (WatchInbox) alike."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        call = _Call(
            method=method,
            request_id=request_id_from(handler_call_details.invocation_metadata),
            metadata=handler_call_details.invocation_metadata,
            deserialize=handler.request_deserializer,
        )
        # The request arrives as bytes and is parsed inside the call: a message gRPC could not parse (a string
        # that is not UTF-8) would otherwise end as UNKNOWN with protobuf's exception text, before any handler.
        if handler.unary_unary is not None:
            # On an aio server the behaviour is a coroutine function taking an aio context, whatever the stubs say.
            return grpc.unary_unary_rpc_method_handler(
                call.unary(cast(UnaryBehavior, handler.unary_unary)),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None and method.startswith(_OWN_STREAMS):
            return grpc.unary_stream_rpc_method_handler(
                call.stream(cast(StreamBehavior, handler.unary_stream)),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        return handler


class _Call:
    """One call's request id, trace span, access log line, metrics and error mapping, around its behaviour."""

    def __init__(
        self,
        *,
        method: str,
        request_id: str,
        metadata: tuple[tuple[str, str | bytes], ...] | None,
        deserialize: Callable[[bytes], Any] | None,
    ) -> None:
        self.method = method
        self.request_id = request_id
        self.metadata = metadata
        self.deserialize = deserialize
        # Label values bounded by the contracts: only methods that have a handler get here.
        self.service, self.name = split_method(method)
        # Probes are not traced: a span every few seconds per pod would drown the traces worth reading.
        self.traced = not method.startswith(_HEALTH_PREFIX)

    def unary(self, behavior: UnaryBehavior) -> UnaryBehavior:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with self._span() as span:
                async with self._outcome(context, span):
                    return await behavior(parse_request(request, self.deserialize), context)

        return wrapped

    def stream(self, behavior: StreamBehavior) -> StreamBehavior:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            with self._span() as span:
                async with self._outcome(context, span):
                    async for response in behavior(parse_request(request, self.deserialize), context):
                        yield response

        return wrapped

    @contextlib.contextmanager
    def _span(self) -> Iterator[Span | None]:
        if not self.traced:
            yield None
            return
        with tracer().start_as_current_span(
            f"{self.service}/{self.name}",
            # The caller's traceparent (a client's, through Envoy, or another Clarion service's), if it sent one.
            context=extract(dict(self.metadata or ())),
            kind=SpanKind.SERVER,
            attributes={**rpc_attributes(self.service, self.name), "clarion.request_id": self.request_id},
            # The outcome is recorded below, as a gRPC code: a client's mistake is not the server's error.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    @contextlib.asynccontextmanager
    async def _outcome(self, context: grpc.aio.ServicerContext[Any, Any], span: Span | None) -> AsyncIterator[None]:
        method, request_id = self.method, self.request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, rpc=method)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        trailer = ((REQUEST_ID_HEADER, request_id),)
        try:
            yield
            context.set_trailing_metadata(trailer)
        except ClarionError as error:
            code = error.code
            await _abort(context, to_status(error, request_id=request_id), trailer, reason=error.reason)
        except NotImplementedError:
            # The generated base servicer raises this for an RPC nobody has implemented yet.
            code = grpc.StatusCode.UNIMPLEMENTED
            await context.abort(code, f"{method} is not implemented yet", trailer)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            # The handler aborted on its own: the status is already decided.
            code = context.code()
            raise
        except Exception as exc:
            if is_database_unavailable(exc):
                # PostgreSQL is down or restarting: the request was fine, and a retry after a moment will do.
                code = grpc.StatusCode.UNAVAILABLE
                log.warning("rpc_database_unavailable", error=type(exc).__name__)
                await _abort(context, to_status(DATABASE_UNAVAILABLE, request_id=request_id), trailer, reason="DB")
            else:
                code = grpc.StatusCode.INTERNAL
                log.exception("rpc_unhandled_error")
                await _abort(context, internal_status(request_id=request_id), trailer, reason="INTERNAL")
        finally:
            elapsed_s = time.perf_counter() - started
            RPC_SECONDS.labels(grpc_service=self.service, grpc_method=self.name).observe(elapsed_s)
            RPC_HANDLED.labels(grpc_service=self.service, grpc_method=self.name, grpc_code=code.name).inc()
            if span is not None:
                record_grpc_code(span, code)
            duration_ms = round(elapsed_s * 1000, 3)
            # Kubernetes probes call Health every few seconds: log them only at debug, unless they fail.
            quiet = method.startswith(_HEALTH_PREFIX) and code == grpc.StatusCode.OK
            (log.debug if quiet else log.info)("rpc_finished", code=code.name, duration_ms=duration_ms)
            structlog.contextvars.clear_contextvars()


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any],
    status: Any,
    trailer: tuple[tuple[str, str], ...],
    *,
    reason: str,
) -> None:
    log.info("rpc_error", reason=reason, message=status.message)
    grpc_status = rpc_status.to_status(status)
    await context.abort(grpc_status.code, grpc_status.details, tuple(grpc_status.trailing_metadata) + trailer)


def parse_request(request: Any, deserialize: Callable[[bytes], Any] | None) -> Any:
    """The request message from its bytes (as it is when there is no deserializer); INVALID_ARGUMENT when the bytes
    are not a message of the RPC."""
    if deserialize is None:
        return request
    try:
        return deserialize(request)
    except DecodeError:
        raise InvalidArgument(
            "the request is not a valid message of this RPC (every string field must be UTF-8)",
            reason="MALFORMED_REQUEST",
        ) from None
