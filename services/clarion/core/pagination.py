"""Opaque page tokens for keyset pagination (AIP-158).

A token holds the sort key of the last item returned and a fingerprint of the filters it was issued for, so a token
reused with other filters is refused instead of silently returning a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from clarion.core.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int, *, field: str = "page_size") -> int:
    """The page size to use: 0 means the default; above the maximum is coerced down (AIP-158); negative is an error."""
    if requested < 0:
        raise InvalidArgument.for_field(field, "must not be negative")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


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
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position, fingerprint = payload["p"], payload["f"]
    except (ValueError, KeyError, TypeError, binascii.Error):
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
    except (ValueError, IndexError, TypeError):
        raise _foreign(field) from None
