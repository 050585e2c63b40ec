"""SuppressionService (clarion.v1.SuppressionService): a project's list of addresses it does not send to. Each call
acts in the caller's project (clarion.keys.auth.caller_project); the accept reads the list through store.suppressed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import empty_pb2
from grpc.aio import ServicerContext

from clarion.core.db import FastPath
from clarion.core.errors import NotFound
from clarion.core.pagination import decode_keyset, encode_page_token, page_size, position_text, position_time
from clarion.core.server import ServiceRegistration, service_registration
from clarion.core.validation import Violations, has_line_break_or_nul
from clarion.delivery.channels import BY_PROTO
from clarion.keys.auth import caller_project
from clarion.suppressions import store
from clarion.users import validation
from clarion.v1 import common_pb2, suppressions_pb2, suppressions_pb2_grpc

Context = ServicerContext[Any, Any]

# The channels whose addresses can be suppressed: the ones a project sends to an address of the user's.
SUPPRESSIBLE = (common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_SMS)
MAX_DETAIL_CHARS = 500
_REASONS = {
    suppressions_pb2.SUPPRESSION_REASON_UNSPECIFIED: "manual",
    suppressions_pb2.SUPPRESSION_REASON_MANUAL: "manual",
    suppressions_pb2.SUPPRESSION_REASON_HARD_BOUNCE: "hard_bounce",
    suppressions_pb2.SUPPRESSION_REASON_SPAM_REPORT: "spam_report",
    suppressions_pb2.SUPPRESSION_REASON_UNSUBSCRIBE: "unsubscribe",
}
_REASON_VALUES = {name: value for value, name in _REASONS.items() if value}


def _channel(value: int, field: str, violations: Violations) -> str:
    if value not in SUPPRESSIBLE:
        violations.add(field, "must be CHANNEL_EMAIL or CHANNEL_SMS")
        return ""
    return BY_PROTO[value].name


def normalize_address(channel: str, address: str, field: str, violations: Violations) -> str:
    """An address as suppressions hold it: an email in lower case, a phone number in E.164."""
    address = address.strip()
    if not address:
        violations.add(field, "is required")
        return ""
    if channel == "email":
        return validation.normalize_email(address, field, violations).lower()
    if channel == "sms":
        return validation.normalize_phone(address, field, violations)
    return ""


def to_proto(row: store.Suppressed) -> suppressions_pb2.Suppression:
    proto = suppressions_pb2.Suppression(
        channel=next(c.proto for c in BY_PROTO.values() if c.name == row.channel),
        address=row.address,
        reason=_REASON_VALUES.get(row.reason, suppressions_pb2.SUPPRESSION_REASON_UNSPECIFIED),
        detail=row.detail,
    )
    proto.create_time.FromDatetime(row.created_at)
    return proto


class SuppressionServicer(suppressions_pb2_grpc.SuppressionServiceServicer):
    def __init__(self, *, fast: FastPath) -> None:
        self._fast = fast

    async def CreateSuppression(
        self, request: suppressions_pb2.CreateSuppressionRequest, context: Context
    ) -> suppressions_pb2.Suppression:
        given = request.suppression
        violations = Violations()
        channel = _channel(given.channel, "suppression.channel", violations)
        address = normalize_address(channel, given.address, "suppression.address", violations) if channel else ""
        reason = _REASONS.get(given.reason)
        violations.check(reason is not None, "suppression.reason", "is not a SuppressionReason value")
        violations.check(
            len(given.detail) <= MAX_DETAIL_CHARS and not has_line_break_or_nul(given.detail),
            "suppression.detail",
            f"must be one line of at most {MAX_DETAIL_CHARS} characters",
        )
        violations.raise_if_any()
        async with self._fast.connection() as connection:
            row = await store.add(
                connection, caller_project().project_id, channel, address, reason or "manual", given.detail
            )
        return to_proto(row)

    async def DeleteSuppression(
        self, request: suppressions_pb2.DeleteSuppressionRequest, context: Context
    ) -> empty_pb2.Empty:
        violations = Violations()
        channel = _channel(request.channel, "channel", violations)
        address = normalize_address(channel, request.address, "address", violations) if channel else ""
        violations.raise_if_any()
        async with self._fast.connection() as connection:
            removed = await store.remove(connection, caller_project().project_id, channel, address)
        if not removed:
            raise NotFound(f"{address} is not suppressed on {channel}", reason="SUPPRESSION_NOT_FOUND")
        return empty_pb2.Empty()

    async def ListSuppressions(
        self, request: suppressions_pb2.ListSuppressionsRequest, context: Context
    ) -> suppressions_pb2.ListSuppressionsResponse:
        violations = Violations()
        channel = _channel(request.channel, "channel", violations) if request.channel else None
        violations.raise_if_any()
        size = page_size(request.page_size)
        project = caller_project().project_id
        filters = {"project": project, "channel": channel}

        def position(values: list[Any]) -> tuple[datetime, str, str]:
            return position_time(values[0]), position_text(values[1]), position_text(values[2])

        after = decode_keyset(request.page_token, filters, position)
        async with self._fast.connection() as connection:
            rows = await store.page(connection, project, channel=channel, after=after, limit=size + 1)
        response = suppressions_pb2.ListSuppressionsResponse(suppressions=[to_proto(row) for row in rows[:size]])
        if len(rows) > size:
            last = rows[size - 1]
            response.next_page_token = encode_page_token(
                [last.created_at.isoformat(), last.channel, last.address], filters
            )
        return response


def registration(*, fast: FastPath) -> ServiceRegistration:
    return service_registration(
        SuppressionServicer(fast=fast),
        suppressions_pb2_grpc.add_SuppressionServiceServicer_to_server,
        suppressions_pb2.DESCRIPTOR.services_by_name["SuppressionService"],
    )
