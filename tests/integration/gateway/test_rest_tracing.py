"""A REST caller's W3C traceparent crosses the real Envoy: the service's span is its child, in the caller's trace."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.integration.gateway.conftest import RestClient
from tests.integration.test_tracing import CALLER_SPAN_ID, CALLER_TRACE_ID, TRACEPARENT, hex_id, spans

pytestmark = pytest.mark.integration
__all__ = ["spans"]  # the fixture, shared with the gRPC tracing tests


async def test_the_callers_traceparent_goes_through_envoy(rest: RestClient, spans: InMemorySpanExporter) -> None:
    response = await rest.post(
        "/v1/users", {"email_address": "traced-rest@example.com"}, headers={"traceparent": TRACEPARENT}
    )
    assert response.status == 200, response.body

    [server] = [s for s in spans.get_finished_spans() if s.name == "clarion.v1.UserService/CreateUser"]
    assert server.kind == SpanKind.SERVER
    assert hex_id(server.context.trace_id, 32) == CALLER_TRACE_ID
    assert server.parent is not None
    assert hex_id(server.parent.span_id, 16) == CALLER_SPAN_ID
