"""Traces leave a real `clarion serve all` over OTLP/gRPC when the standard OpenTelemetry variables say so
(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), received by a stand-in collector: the
outermost boundary, in the test's process."""

from __future__ import annotations

import queue
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from clarion.core.config import load_settings
from clarion.core.tracing import tracer_provider
from clarion.v1 import users_pb2, users_pb2_grpc
from tests.conftest import free_port
from tests.e2e.conftest import wait_until_serving

pytestmark = pytest.mark.e2e


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every export request it receives."""

    def __init__(self) -> None:
        self.received: queue.Queue[trace_service_pb2.ExportTraceServiceRequest] = queue.Queue()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.received.put(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


def test_the_standard_otel_variables_send_spans_to_a_collector(
    clarion_process: Callable[..., subprocess.Popen[str]],
    make_database: Callable[..., str],
    collector: tuple[Collector, int],
) -> None:
    servicer, collector_port = collector
    port = free_port()
    server = clarion_process(
        "serve",
        "all",
        env={
            "CLARION_DATABASE_URL": make_database(migrated=True),
            "CLARION_GRPC_PORT": str(port),
            "CLARION_AUTH_REQUIRED": "false",
            "CLARION_HEALTH_PORT": "0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
            "OTEL_SERVICE_NAME": "clarion-e2e",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    wait_until_serving(f"127.0.0.1:{port}", server)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        users_pb2_grpc.UserServiceStub(channel).CreateUser(
            users_pb2.CreateUserRequest(user=users_pb2.User(email_address="otel@example.com")), timeout=10
        )
    deadline = time.monotonic() + 30
    while True:
        request = servicer.received.get(timeout=max(0.1, deadline - time.monotonic()))
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            names = [s.name for scope in resource_spans.scope_spans for s in scope.spans]
            if "clarion.v1.UserService/CreateUser" in names:
                assert attributes["service.name"] == "clarion-e2e"
                assert attributes["deployment.environment"] == "test"
                return


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_is_on_exactly_when_an_endpoint_is_set_and_the_sdk_is_not_disabled(
    environ: dict[str, str], on: bool
) -> None:
    provider = tracer_provider(load_settings(otlp_endpoint=None), service_name="clarion-x", environ=environ)
    assert (provider is not None) is on
    if provider is not None:
        assert provider.resource.attributes["service.name"] == "clarion-x"
        provider.shutdown()
