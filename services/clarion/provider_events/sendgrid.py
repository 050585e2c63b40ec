"""SendGrid's Event Webhook: its signature and its events.

The signature is ECDSA P-256 with SHA-256 over the timestamp header's text followed by the raw body, base64 in
`X-Twilio-Email-Event-Webhook-Signature`; the public key is the base64 DER (SubjectPublicKeyInfo) SendGrid shows
for the signed webhook (PEM is accepted too). `cryptography` does the curve work (it is already a dependency of
google-auth); nothing here is hand-rolled.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
# Far above a real signature (about 96 base64 characters) and timestamp: anything longer is refused unread.
_MAX_HEADER_CHARS = 256
# SendGrid posts batches of up to a few thousand events; a body past these is not SendGrid's.
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_EVENTS = 10_000
_MAX_ID_CHARS = 128


# SendGrid's event names that Clarion acts on (the others are kept and change nothing). Its vocabulary, not
# Clarion's statuses, though two words are the same.
DELIVERED = "delivered"
BOUNCE = "bounce"
BLOCKED = "blocked"  # also the `type` of a soft bounce
DROPPED = "dropped"
SPAM_REPORT = "spamreport"
UNSUBSCRIBE = "unsubscribe"
GROUP_UNSUBSCRIBE = "group_unsubscribe"


class BadKey(ValueError):
    """The configured public key is not an EC P-256 public key."""


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key from SendGrid's base64 DER, or a PEM block; BadKey otherwise."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise BadKey(f"not a public key: {type(exc).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise BadKey("not an EC P-256 public key")
    return key


def signature_ok(key: ec.EllipticCurvePublicKey, signature: str, timestamp: str, body: bytes) -> bool:
    """Whether `signature` (base64 DER) signs the timestamp followed by the body."""
    if len(signature) > _MAX_HEADER_CHARS or len(timestamp) > _MAX_HEADER_CHARS:
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Event:
    """One SendGrid event, as Clarion keeps it."""

    event_id: str  # sg_event_id
    event: str  # SendGrid's name: DELIVERED, BOUNCE... ("open", "click" and the rest are kept as they come)
    delivery_id: uuid.UUID | None  # from the custom_args Clarion sent; None when absent or not Clarion's
    email: str  # lower case
    occurred_at: datetime
    bounce_type: str  # for "bounce": "bounce" (hard) or "blocked" (soft); else ""
    reason: str  # the provider's words, cut to 300 characters
    detail: dict[str, Any]  # the event as posted, for the record


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def events(body: bytes) -> Iterator[Event | None]:
    """The batch's events in order: an Event, or None for one that is not a well-formed SendGrid event. ValueError
    when the body is not a JSON array of at most MAX_EVENTS items."""
    parsed = json.loads(body)
    if not isinstance(parsed, list):
        raise ValueError("the body is not a JSON array of events")
    if len(parsed) > MAX_EVENTS:
        raise ValueError(f"more than {MAX_EVENTS} events in one batch")
    for item in parsed:
        yield read_event(item)


def read_event(item: Any) -> Event | None:
    """One event from its JSON (as posted, or as kept): an Event, or None when it is not a well-formed one."""
    if not isinstance(item, dict):
        return None
    event_id, kind, stamp = item.get("sg_event_id"), item.get("event"), item.get("timestamp")
    if not (isinstance(event_id, str) and 0 < len(event_id) <= _MAX_ID_CHARS and isinstance(kind, str)):
        return None
    if type(stamp) is not int or not 0 < stamp < 2**33:
        return None
    delivery_id: uuid.UUID | None = None
    if isinstance(item.get("delivery_id"), str):
        try:
            delivery_id = uuid.UUID(item["delivery_id"])
        except ValueError:
            delivery_id = None
    return Event(
        event_id=event_id,
        event=kind[:32],
        delivery_id=delivery_id,
        email=_text(item.get("email"), 254).strip().lower(),
        occurred_at=datetime.fromtimestamp(stamp, UTC),
        bounce_type=_text(item.get("type"), 32),
        reason=_text(item.get("reason") or item.get("response"), 300),
        detail=item,
    )
