"""One notification is one trace: the caller's span, SendNotification, its calls to UserService and TemplateService,
the dispatcher, the publish, the worker and the provider call — collected by the SDK's in-memory exporter while the
real services, the real dispatcher and a real worker run on PostgreSQL and each broker. Its log lines carry the
trace id."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from clarion.core.broker import Broker
from clarion.core.config import load_settings
from clarion.delivery.consumer import DeliveryWorker
from clarion.delivery.providers.factory import create_email_provider
from clarion.delivery.queues import EMAIL_QUEUE
from clarion.notifications import models as m
from clarion.v1 import notifications_pb2, templates_pb2, users_pb2
from tests.integration.conftest import RunningClarion
from tests.integration.notifications.test_dispatcher import dispatcher_for

pytestmark = pytest.mark.integration

# The caller's own span: a W3C traceparent, as a client (or Envoy, passing the header on) sends it.
CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test. OpenTelemetry takes one global provider per process: the first test
    installs it, and each test starts from an empty exporter."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def parent_chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """The names of the span and its ancestors, innermost first, up to the first parent not recorded here."""
    names = [span.name]
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


async def test_a_notification_is_one_trace_from_send_to_the_provider(
    clarion: RunningClarion, broker: Broker, spans: InMemorySpanExporter, tmp_path: Path, log_output: object
) -> None:
    user = await clarion.users.CreateUser(
        users_pb2.CreateUserRequest(user={"email_address": "traced@example.com"}), timeout=10
    )
    await clarion.templates.CreateTemplate(
        templates_pb2.CreateTemplateRequest(template={"template_key": "traced", "subject": "Hi", "body": "B"}),
        timeout=10,
    )
    sent = await clarion.notifications.SendNotification(
        notifications_pb2.SendNotificationRequest(user_id=user.user_id, template_key="traced"),
        metadata=(("traceparent", TRACEPARENT),),
        timeout=10,
    )
    notification_id = sent.notification.notification_id
    async with clarion.resources.sessions() as session:
        row = await session.get(m.NotificationRow, uuid.UUID(notification_id))
        assert row is not None
        assert row.trace_parent.split("-")[1] == CALLER_TRACE_ID, "the row keeps the trace for the dispatcher"

    provider = create_email_provider(load_settings(email_provider="file", outbox_dir=tmp_path / "outbox"))
    worker = DeliveryWorker(channel="email", fast=clarion.resources.fast, provider=provider)
    await worker.start(broker, EMAIL_QUEUE, prefetch=4)
    try:
        await dispatcher_for(clarion, broker).run_once()
        for _ in range(100):
            if list((tmp_path / "outbox").glob("*.eml")):
                break
            await asyncio.sleep(0.1)
    finally:
        await broker.stop_consuming(timeout_s=10)
        await provider.close()
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1

    trace_spans = [s for s in spans.get_finished_spans() if hex_id(s.context.trace_id, 32) == CALLER_TRACE_ID]
    by_id = {s.context.span_id: s for s in trace_spans}
    by_name = {s.name: s for s in trace_spans}

    send = by_name["clarion.v1.NotificationService/SendNotification"]
    assert send.kind == SpanKind.SERVER
    assert send.parent is not None
    assert hex_id(send.parent.span_id, 16) == CALLER_SPAN_ID, "the caller's span is the parent"
    assert send.attributes is not None
    assert send.attributes["rpc.grpc.status_code"] == 0

    # SendNotification checked the user and rendered the template: client spans, each with its server span.
    for service, method in (("UserService", "GetUser"), ("TemplateService", "RenderTemplate")):
        calls = [s for s in trace_spans if s.name == f"clarion.v1.{service}/{method}"]
        kinds = sorted(s.kind.name for s in calls)
        assert kinds.count("CLIENT") >= 1, (service, kinds)
        assert kinds.count("SERVER") == kinds.count("CLIENT"), "every call reached its server within the trace"
        for server in (s for s in calls if s.kind == SpanKind.SERVER):
            assert server.parent is not None
            assert by_id[server.parent.span_id].kind == SpanKind.CLIENT

    provider_span = by_name["file send"]
    assert provider_span.kind == SpanKind.CLIENT
    assert parent_chain(provider_span, by_id) == [
        "file send",
        "deliver email",
        "publish email",
        "clarion.v1.NotificationService/SendNotification",
    ]
    assert "dispatch notification" not in by_name, "planned at accept, inside SendNotification's span"
    assert by_name["deliver email"].kind == SpanKind.CONSUMER
    assert by_name["publish email"].kind == SpanKind.PRODUCER

    # Every log line of the traced work carries its trace id.
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]  # type: ignore[attr-defined]
    accepted = [line for line in lines if line.get("event") == "notification_accepted"]
    assert [line["trace_id"] for line in accepted] == [CALLER_TRACE_ID]
    delivered = [line for line in lines if line.get("event") == "delivery_sent"]
    assert [line["trace_id"] for line in delivered] == [CALLER_TRACE_ID]


async def test_without_a_caller_span_the_first_call_starts_the_trace(
    clarion: RunningClarion, spans: InMemorySpanExporter
) -> None:
    await clarion.users.CreateUser(users_pb2.CreateUserRequest(user={"email_address": "root@example.com"}), timeout=10)

    [server] = [s for s in spans.get_finished_spans() if s.name == "clarion.v1.UserService/CreateUser"]
    assert server.parent is None, "a root span"
    assert server.kind == SpanKind.SERVER
