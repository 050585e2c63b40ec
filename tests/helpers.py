"""Small helpers shared by tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clarion.delivery.lifecycle import DELIVERY_MOVES, NotificationStatus
from clarion.notifications import models as m

M = TypeVar("M", bound=Message)


def status_detail(status: Any, kind: type[M]) -> M:
    """The first detail of type `kind` in a google.rpc.Status; fails the test if there is none."""
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            return message
    raise AssertionError(f"no {kind.__name__} in the status details: {status}")


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    """Health/Check for `service` over a real channel."""
    # The grpc_health stubs do not declare the stub's methods.
    stub = cast(Any, health_pb2_grpc.HealthStub(channel))
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


def notification_row(**fields: Any) -> m.NotificationRow:
    """A dispatched (in progress) notification row to insert directly; `fields` override the defaults."""
    now = fields.pop("created_at", None) or datetime.now(UTC)
    defaults: dict[str, Any] = {
        "id": uuid.uuid4(),
        "user_id": "ada",
        "template_key": "digest",
        "template_version": 1,
        "message_data": {},
        "channels": [],
        "priority": 1,
        "locale": "",
        "status": NotificationStatus.IN_PROGRESS,
        "send_at": now,
        "created_at": now,
        "updated_at": now,
    }
    return m.NotificationRow(**{**defaults, **fields})


# Every change of a delivery's status the lifecycle allows (clarion.delivery.lifecycle.DELIVERY_MOVES), enforced by
# PostgreSQL in every migrated test database: a statement anywhere in Clarion that moves a delivery otherwise fails
# the test that ran it. Inserts are not checked (tests insert rows in any status as fixtures); a test that has to set
# up an impossible history says so with `SET LOCAL clarion.unguarded = 'on'`.
_LEGAL_PAIRS = sorted({(m.before.value, m.after.value) for m in DELIVERY_MOVES if m.before is not None})
LIFECYCLE_GUARD_SQL = f"""
CREATE FUNCTION clarion_test_guard_delivery_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('clarion.unguarded', true), '') = 'on' THEN
        RETURN NEW;
    END IF;
    IF (OLD.status, NEW.status) NOT IN ({", ".join(f"('{a}', '{b}')" for a, b in _LEGAL_PAIRS)}) THEN
        RAISE EXCEPTION 'illegal delivery move % -> % (lifecycle.DELIVERY_MOVES)', OLD.status, NEW.status;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER clarion_test_guard_delivery_move BEFORE UPDATE OF status ON deliveries
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION clarion_test_guard_delivery_move();
"""


def without_content(notification: Any) -> Any:
    """A Notification without its deliveries' rendered content, which only GetNotification sets: what the other
    calls answer."""
    copy = type(notification)()
    copy.CopyFrom(notification)
    for delivery in copy.deliveries:
        delivery.ClearField("email")
        delivery.ClearField("push")
    return copy
