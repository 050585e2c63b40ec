"""SMS through Twilio's Messages API (`POST /2010-04-01/Accounts/<sid>/Messages.json`), over httpx's async client.

Not the official `twilio` package: its client is synchronous (it would need a thread per send, as sendgrid.py
does) and it brings a large dependency tree for what is one form-encoded POST with basic auth.

Twilio has no idempotency key, so a send that timed out after the request went out may have been delivered: that
case, and only that one, is OutcomeUnknown. Which side of the line a failure falls on is known from httpx's
documented `trace` request extension (the request's headers started going out), not guessed from the timing.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx

from clarion.core.logging import get_logger
from clarion.delivery.providers.base import (
    OutcomeUnknown,
    PermanentFailure,
    ProviderError,
    SmsMessage,
    TransientFailure,
    parse_retry_after,
    redact_error,
)

log = get_logger(__name__)

DEFAULT_BASE_URL = "https://api.twilio.com"

# 401/403: Twilio refuses our account SID or auth token. The message is fine; the setup is not. Retrying (with the
# circuit breaker open meanwhile) lets fixed credentials deliver it instead of failing every text for good.
_OUR_CREDENTIALS = frozenset({401, 403})
_RETRYABLE = frozenset({408, 429})
# Twilio's own "too many requests" (20429) and "queue overflow" (30001): busy, not refusing, whatever the status.
_BUSY_CODES = frozenset({20429, 30001})
# Errors raised before a byte of the request was written: Twilio cannot have seen it.
_BEFORE_SENDING = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
)


class TwilioProvider:
    """Sends each text as one Messages API request, with no retries of its own."""

    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str = "",
        messaging_service_sid: str = "",
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("Twilio needs an account SID and an auth token")
        if not from_number and not messaging_service_sid:
            raise ValueError("Twilio needs a From number or a messaging service SID")
        self._auth_token = auth_token
        self._timeout_s = timeout_s
        # One or the other: a messaging service picks the sender from its pool, so it wins when both are set.
        self._sender = (
            {"MessagingServiceSid": messaging_service_sid} if messaging_service_sid else {"From": from_number}
        )
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}/Messages.json"
        self._client = httpx.AsyncClient(
            auth=httpx.BasicAuth(account_sid, auth_token),
            timeout=httpx.Timeout(timeout_s),
            headers={"Accept": "application/json"},
        )

    async def send(self, message: SmsMessage) -> str:
        """POST the text; return Twilio's message sid (SM…)."""
        form = {"To": message.to, "Body": message.body, **self._sender}
        secrets = (message.to, self._auth_token)
        progress = _Progress()
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.post(self._url, data=form, extensions={"trace": progress.trace})
        except (TimeoutError, httpx.ReadTimeout, httpx.WriteTimeout):
            if progress.sent:
                raise OutcomeUnknown(f"twilio did not answer within {self._timeout_s:g}s") from None
            raise TransientFailure(f"twilio unreachable within {self._timeout_s:g}s") from None
        except httpx.TransportError as exc:
            if progress.sent and not isinstance(exc, _BEFORE_SENDING):
                text = redact_error(
                    f"twilio connection lost after sending: {type(exc).__name__}: {exc}", secrets=secrets
                )
                raise OutcomeUnknown(text) from None
            raise TransientFailure(
                redact_error(f"twilio unreachable: {type(exc).__name__}: {exc}", secrets=secrets)
            ) from None
        except Exception as exc:  # the contract: nothing but a ProviderError leaves a provider
            text = redact_error(f"twilio failed: {type(exc).__name__}: {exc}", secrets=secrets)
            raise TransientFailure(text) from exc
        if response.is_success:
            return _sid(response, delivery_id=message.delivery_id)
        raise _failure(response, secrets)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


class _Progress:
    """Whether the request started going out, from httpcore's trace events ("http11.send_request_headers.started")."""

    def __init__(self) -> None:
        self.sent = False

    async def trace(self, event_name: str, info: dict[str, Any]) -> None:
        if ".send_request_headers." in event_name:
            self.sent = True


def _sid(response: httpx.Response, *, delivery_id: str) -> str:
    """The `sid` of Twilio's message JSON. A 2xx without one was still accepted: sending again would duplicate it."""
    try:
        sid = response.json().get("sid")
    except (ValueError, AttributeError):
        sid = None
    if isinstance(sid, str) and sid:
        return sid
    log.warning("twilio_sid_missing", delivery_id=delivery_id, status=response.status_code)
    return ""


def _failure(response: httpx.Response, secrets: tuple[str, ...]) -> ProviderError:
    """Twilio's answer as a typed failure, quoting its error code and message (redacted)."""
    status = response.status_code
    code, detail = _twilio_error(response)
    head = f"twilio {status}" if code is None else f"twilio {status} code {code}"
    text = redact_error(f"{head}: {detail}", secrets=secrets)
    busy = code in _BUSY_CODES or status in _RETRYABLE
    # A 3xx is not followed: the base URL is wrong, which is our setup, like refused credentials.
    if busy or status >= 500 or status in _OUR_CREDENTIALS or status < 400:
        return TransientFailure(text, retry_after_s=parse_retry_after(response.headers.get("Retry-After")))
    return PermanentFailure(text)


def _twilio_error(response: httpx.Response) -> tuple[int | None, str]:
    """(code, message) from Twilio's {"code", "message", "more_info", "status"}, or (None, the raw body)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = body.get("code")
        message = body.get("message")
        if isinstance(code, int) and not isinstance(code, bool):
            return code, str(message or "(no message)")
    return None, response.text or "(no body)"
