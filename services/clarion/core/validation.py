"""Field checks shared by every bounded context. Each failure names the field, as the client spelled it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import langcodes
from google.protobuf import json_format, struct_pb2

from clarion.core.errors import FieldViolation, InvalidArgument

_CONTROL = re.compile(r"[\r\n\x00]")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class Violations:
    """Collects every bad field of a request, so the client learns about all of them at once."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def check(self, ok: bool, field: str, description: str) -> None:
        """Record a violation when `ok` is false."""
        if not ok:
            self.add(field, description)

    def raise_if_any(self, reason: str | None = None) -> None:
        """INVALID_ARGUMENT listing every violation, the message naming each field."""
        if self.items:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.items)
            raise InvalidArgument(message, violations=self.items, reason=reason)


def has_line_break_or_nul(value: str) -> bool:
    """CR and LF could add a header to an email built from this value; NUL truncates it in C libraries."""
    return bool(_CONTROL.search(value))


def check_single_line(violations: Violations, field: str, value: str, *, max_length: int) -> None:
    """A name or address: at most `max_length` characters, with no CR, LF or NUL."""
    violations.check(not has_line_break_or_nul(value), field, "must not contain CR, LF or NUL characters")
    violations.check(len(value) <= max_length, field, f"must be at most {max_length} characters")


def is_valid_id(value: str) -> bool:
    """An id a client may choose: 1 to 63 letters, digits, `-` and `_`, starting with a letter or digit."""
    return bool(_ID.match(value))


def require_id(value: str, field: str) -> str:
    """The id, or INVALID_ARGUMENT naming `field` when it is missing or malformed."""
    if not value:
        raise InvalidArgument.for_field(field, "is required")
    if not is_valid_id(value):
        raise InvalidArgument.for_field(field, "must be 1 to 63 letters, digits, '-' or '_'")
    return value


def normalize_language_tag(value: str, field: str, violations: Violations) -> str:
    """A well-formed BCP-47 tag in canonical case (`pt-br` → `pt-BR`), or "" after recording the violation."""
    if has_line_break_or_nul(value) or not langcodes.tag_is_valid(value):
        violations.add(field, "must be a BCP-47 language tag such as en, pt or pt-BR")
        return ""
    return str(langcodes.standardize_tag(value))


# The times a request may name: wide enough for any real schedule or report, narrow enough that arithmetic on them
# (a window's default start, a year ahead) never leaves what datetime can hold.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=UTC)


def parse_timestamp(message: Any, name: str, violations: Violations) -> datetime | None:
    """A Timestamp field of `message` as an aware datetime; None when unset, or when it is not a valid time in
    [1970, 9000) (a violation naming `name` is added)."""
    if not message.HasField(name):
        return None
    value: datetime | None
    try:
        value = getattr(message, name).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):  # nanos out of range, seconds past year 9999...
        value = None
    if value is None or not EARLIEST_TIME <= value < LATEST_TIME:
        violations.add(name, "must be a valid time between 1970-01-01 and 9000-01-01")
        return None
    return value


def struct_to_dict(struct: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """A Struct as plain values; INVALID_ARGUMENT naming `field` for what JSON cannot hold (NaN, Infinity)."""
    try:
        values: dict[str, Any] = json_format.MessageToDict(struct)
    except ValueError:
        raise InvalidArgument.for_field(field, "numbers must be finite (no NaN or Infinity)") from None
    if _holds_nul(values):
        # PostgreSQL's text and JSONB cannot store U+0000: refused here rather than failing when stored.
        raise InvalidArgument.for_field(field, "keys and text must not contain NUL characters (U+0000)")
    return values


def _holds_nul(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending += item.keys()
            pending += item.values()
        elif isinstance(item, list):
            pending += item
    return False
