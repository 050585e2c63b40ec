"""Opaque page tokens for keyset pagination (AIP-158).

A token holds the sort key of the last item returned and a fingerprint of the filters it was issued for, so a token
reused with other filters is refused instead of silently returning a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from clarion.core.errors import InvalidArgument
from clarion.core.validation import EARLIEST_TIME, LATEST_TIME

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# A token this API issues is about 100 characters.
MAX_TOKEN_CHARS = 1024


def page_size(
    requested: int, *, field: str = "page_size", default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE
) -> int:
    """The page size to use: 0 means the default; above the maximum is coerced down (AIP-158); negative is an error."""
    if requested < 0:
        raise InvalidArgument.for_field(field, "must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)


def _fingerprint(filters: Mapping[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _foreign(field: str) -> InvalidArgument:
    return InvalidArgument.for_field(field, "is not a page token this API issued", reason="INVALID_PAGE_TOKEN")


def encode_page_token(position: list[Any], filters: Mapping[str, Any]) -> str:
    """A token for the page after `position` (the last item's sort key), valid only with the same `filters`."""
    payload = json.dumps({"p": position, "f": _fingerprint(filters)}, separators=(",", ":"), default=str)
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str, filters: Mapping[str, Any], *, field: str = "page_token") -> list[Any] | None:
    """The position a token stands for, or None for the first page; INVALID_ARGUMENT for a bad or foreign token."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise _foreign(field)  # before decoding: JSON nested 200,000 deep made json.loads recurse out of stack
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position, fingerprint = payload["p"], payload["f"]
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise _foreign(field) from None
    if not isinstance(position, list):
        raise _foreign(field)
    if fingerprint != _fingerprint(filters):
        raise InvalidArgument.for_field(
            field, "was issued for different filters; repeat the first request's filters", reason="INVALID_PAGE_TOKEN"
        )
    return position


def decode_keyset(
    token: str, filters: Mapping[str, Any], parse: Callable[[list[Any]], T], *, field: str = "page_token"
) -> T | None:
    """The typed position a token stands for (`parse` turns the stored list into it), or None for the first page;
    INVALID_ARGUMENT for a bad, foreign or malformed token."""
    position = decode_page_token(token, filters, field=field)
    if position is None:
        return None
    try:
        return parse(position)
    except (ValueError, IndexError, TypeError, OverflowError):
        raise _foreign(field) from None


# The parts of a position, checked as strictly as the columns they are compared with: a token is the client's text,
# and its fingerprint is no signature, so a forged one reaches these. Each raises ValueError (or TypeError) for
# anything PostgreSQL would refuse, which decode_keyset turns into INVALID_PAGE_TOKEN.


def position_text(value: Any, *, max_chars: int = 256) -> str:
    """A text sort key: a non-empty str without NUL that encodes as UTF-8 (no lone surrogates)."""
    if not isinstance(value, str) or not 0 < len(value) <= max_chars or "\x00" in value:
        raise ValueError("not a text position")
    value.encode("utf-8")  # UnicodeEncodeError, a ValueError, for a lone surrogate
    return value


def position_time(value: Any) -> datetime:
    """A timestamp sort key: ISO 8601 with a time zone, within the times Clarion stores."""
    moment = datetime.fromisoformat(position_text(value, max_chars=64))
    if moment.tzinfo is None or not EARLIEST_TIME <= moment < LATEST_TIME:
        raise ValueError("not a time position")
    return moment


def position_int(value: Any, *, low: int = 1, high: int = 2**31 - 1) -> int:
    """An integer sort key within the column's range (an int, not a bool or a float)."""
    if type(value) is not int or not low <= value <= high:
        raise ValueError("not an integer position")
    return value


def position_uuid(value: Any) -> uuid.UUID:
    """A UUID sort key, from its text form."""
    return uuid.UUID(position_text(value, max_chars=64))
