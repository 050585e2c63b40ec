"""The seam between the channel workers and the outside world: what a provider is given, what it answers, and the
three ways it can fail. The worker decides retries from the exception's type alone, so every provider maps its
client's errors onto these before they leave it."""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Protocol

from clarion.core.logging import REDACTED, redact_text

# Longer error texts are cut: they go into attempt rows and dead-letter headers, not into a debugger.
MAX_ERROR_CHARS = 300
# Delivery ids become file names, Message-ID local parts and APNs collapse ids (at most 64 bytes): UUIDs fit.
_DELIVERY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class EmailMessage:
    """One rendered email for one recipient."""

    delivery_id: str  # stable across retries; SendGrid gets it as custom_args, SMTP and files in the Message-ID
    to: str  # the recipient's address
    subject: str  # line breaks are stripped before it reaches a header (see mime.clean_subject)
    body: str  # text/plain
    html_body: str  # text/html; "" means a text-only email


@dataclass(frozen=True, slots=True)
class PushMessage:
    """One rendered push for one device."""

    delivery_id: str  # FCM: data["delivery_id"], Android collapse key, APNs collapse id, web push tag
    device_id: str
    token: str  # the device's registration token: a secret, never logged nor put in an error text
    platform: str  # "android" | "ios" | "web"
    title: str
    body: str
    data: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SmsMessage:
    """One rendered text message for one phone number."""

    delivery_id: str  # stable across retries; Twilio has no idempotency key, so it is only logged and filed
    to: str  # the recipient's number in E.164 form (+14155550123): personal data, never logged nor put in an error
    body: str  # the rendered text, already checked against the segment limit


class ProviderError(Exception):
    """A send that did not succeed. The message is safe to store and show: no keys, tokens or addresses."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransientFailure(ProviderError):
    """Worth retrying: a timeout, a connection error, 5xx, 429, or our own credentials being refused."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # from the provider's Retry-After, when it sent one


class OutcomeUnknown(TransientFailure):
    """No answer, but the request may have reached the provider (a timeout after it was sent): retried like any
    transient failure, and recorded as an attempt with an unknown outcome, since the retry may be a duplicate."""


class PermanentFailure(ProviderError):
    """Not worth retrying: an invalid address, a request the provider rejects (4xx)."""


class UnregisteredToken(PermanentFailure):
    """The push token is gone (UNREGISTERED) or not a token at all: the worker removes the device."""


class EmailProvider(Protocol):
    """Sends one email. Implementations: sendgrid.SendGridProvider, smtp.SmtpProvider, file.FileProvider."""

    name: str  # "sendgrid" | "smtp" | "file"

    async def send(self, message: EmailMessage) -> str:
        """Send `message`; return the provider's message id ("" if it has none). Raises ProviderError only."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...


class PushProvider(Protocol):
    """Sends one push to one device. Implementations: fcm.FcmProvider, simulated.SimulatedPushProvider."""

    name: str  # "fcm" | "simulated"
    simulated: bool  # True when nothing leaves the process

    async def send(self, message: PushMessage) -> str:
        """Send `message`; return the provider's message id. Raises ProviderError only."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...


class SmsProvider(Protocol):
    """Sends one text message. Implementations: twilio.TwilioProvider, sms_local.FileSmsProvider and
    sms_local.SimulatedSmsProvider."""

    name: str  # "twilio" | "file" | "simulated"

    async def send(self, message: SmsMessage) -> str:
        """Send `message`; return the provider's message id (Twilio's `SM...` sid). Raises ProviderError only."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def check_delivery_id(delivery_id: str) -> str:
    """The delivery id, or PermanentFailure when it could not safely be a file name or a header token."""
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise PermanentFailure("delivery id must be 1-64 characters of letters, digits, '.', '_' or '-'")
    return delivery_id


def redact_error(text: str, *, secrets: Iterable[str] = ()) -> str:
    """`text` made safe to store: the given secrets (key, token, recipient) and anything that looks like an
    address, phone number or bearer token masked, whitespace collapsed to one line, length capped."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _WHITESPACE.sub(" ", redact_text(text)).strip()
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), or None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": HTTP dates are GMT anyway
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None
