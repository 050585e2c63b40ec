"""OpenTelemetry tracing: one trace per notification, from the first gRPC call to the provider call.

The context crosses every hop as a W3C `traceparent`: gRPC metadata between services (the server interceptor and
`TracingClientInterceptor`), the notification row between the accepting call and the dispatcher (the dispatcher runs
later, in another process), and message headers between the dispatcher and the channel workers. A caller's own
`traceparent` (through Envoy too, which passes every header on as metadata) makes Clarion's spans part of its trace.

Spans are exported over OTLP/gRPC when CLARION_OTLP_ENDPOINT or the standard OTEL_EXPORTER_OTLP_ENDPOINT is set
(tracer_provider); otherwise the API's no-op tracer makes every span free. The SDK's own OTEL_* variables
(OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, OTEL_SDK_DISABLED...) apply as usual.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, TypeVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from clarion.core.call_details import with_metadata
from clarion.core.config import Settings
from clarion.core.logging import get_logger

log = get_logger(__name__)

TRACER_NAME = "clarion"
TRACEPARENT = "traceparent"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def tracer() -> trace.Tracer:
    """Clarion's tracer, from whichever provider is installed (the no-op one until `configure_tracing`)."""
    return trace.get_tracer(TRACER_NAME)


def tracer_provider(settings: Settings, *, service_name: str, environ: Mapping[str, str] | None = None) -> Any | None:
    """The SDK's TracerProvider exporting over OTLP/gRPC, or None when tracing is off.

    On when CLARION_OTLP_ENDPOINT is set, or the standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT /
    OTEL_EXPORTER_OTLP_ENDPOINT (the exporter then reads its own OTEL_EXPORTER_OTLP_* settings: headers, TLS,
    timeout); off when OTEL_SDK_DISABLED is true or OTEL_TRACES_EXPORTER is `none`. The process is named by
    OTEL_SERVICE_NAME when set, else `service_name`; OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG) and
    OTEL_BSP_* apply as the SDK reads them."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    standard = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not settings.otlp_endpoint and not standard:
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if protocol != "grpc":
        log.warning("tracing_protocol_unsupported", protocol=protocol, using="grpc")
    # Imported here: a process without an endpoint never loads the SDK and the exporter.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; an attribute given here would win.
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    if settings.otlp_endpoint:
        endpoint = settings.otlp_endpoint
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    else:
        exporter = OTLPSpanExporter()  # the OTEL_EXPORTER_OTLP_* variables, as the SDK documents them
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def configure_tracing(settings: Settings, *, service_name: str) -> bool:
    """Export spans over OTLP (tracer_provider says when and where), naming this process `service_name` unless
    OTEL_SERVICE_NAME does; False (tracing off) otherwise. Spans are batched off the request path; the SDK flushes
    them at exit."""
    provider = tracer_provider(settings, service_name=service_name)
    if provider is None:
        return False
    trace.set_tracer_provider(provider)
    log.info(
        "tracing_enabled",
        endpoint=settings.otlp_endpoint or "from OTEL_EXPORTER_OTLP_*",
        service_name=provider.resource.attributes.get("service.name"),
    )
    return True


def inject(carrier: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The current span's context as headers (`traceparent`, `tracestate` when there is one)."""
    headers: dict[str, str] = dict(carrier or {})
    propagate.inject(headers)
    return headers


def current_traceparent() -> str:
    """The current span's `traceparent`, or "" outside a recorded span: what a notification row keeps."""
    return inject().get(TRACEPARENT, "")


def extract(carrier: Mapping[str, Any]) -> otel_context.Context:
    """The context a caller sent (gRPC metadata, message headers, a stored traceparent); empty when none."""
    return propagate.extract({k: v for k, v in carrier.items() if isinstance(v, str)})


def from_traceparent(traceparent: str) -> otel_context.Context:
    """The context of a stored `traceparent` ("" gives a new trace)."""
    return extract({TRACEPARENT: traceparent} if traceparent else {})


def split_method(method: str) -> tuple[str, str]:
    """`/clarion.v1.UserService/GetUser` → (`clarion.v1.UserService`, `GetUser`)."""
    service, _, name = method.lstrip("/").partition("/")
    return service, name


def rpc_attributes(service: str, name: str) -> dict[str, str]:
    """OpenTelemetry's RPC attributes of a call to `service`'s method `name`."""
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def record_grpc_code(span: trace.Span, code: grpc.StatusCode) -> None:
    """The call's status code on its span; a server fault (not a client's mistake) marks the span as an error."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, code.name))


# Codes that say the server failed, as OpenTelemetry's semantic conventions count them for a server span.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class TracingClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """A CLIENT span around each unary call, its context sent as `traceparent` metadata.

    Written here rather than taken from opentelemetry-instrumentation-grpc: Clarion's one server interceptor already
    owns the request id, logs, metrics and errors, and its span must agree with them on the outcome; the client side
    is then these few lines on the public propagation API.
    """

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Req], Awaitable[grpc.aio.UnaryUnaryCall[Req, Resp]]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Req,
    ) -> grpc.aio.UnaryUnaryCall[Req, Resp]:
        # bytes at run time on grpc.aio, whatever the stubs say.
        raw: str | bytes = client_call_details.method
        service, name = split_method(raw.decode() if isinstance(raw, bytes) else raw)
        with tracer().start_as_current_span(
            f"{service}/{name}", kind=SpanKind.CLIENT, attributes=rpc_attributes(service, name)
        ) as span:
            pairs = [(k, v) for k, v in (client_call_details.metadata or ()) if k != TRACEPARENT]
            pairs += list(inject().items())
            call = await continuation(with_metadata(client_call_details, pairs), request)
            # Awaited here so the span lasts as long as the call; the caller's await returns the same outcome.
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                record_grpc_code(span, exc.code())
            else:
                record_grpc_code(span, grpc.StatusCode.OK)
            return call
