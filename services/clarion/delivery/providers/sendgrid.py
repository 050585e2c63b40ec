"""Email through SendGrid's v3 `mail/send`, with the official `sendgrid` client.

The client is synchronous (urllib underneath), so calls run in this provider's own threads, each bounded by
`timeout_s`. SendGrid has no idempotency key: the delivery id travels in `custom_args`, so a duplicate caused by a
crash after SendGrid accepted can at least be recognised in its event webhook and activity feed.
"""

from __future__ import annotations

import json
import logging
import time
from email.headerregistry import Address
from typing import Any

from python_http_client.exceptions import HTTPError  # type: ignore[import-untyped]
from sendgrid import SendGridAPIClient  # type: ignore[import-untyped]

from clarion.delivery.providers.base import (
    EmailMessage,
    OutcomeUnknown,
    PermanentFailure,
    ProviderError,
    TransientFailure,
    parse_retry_after,
    redact_error,
)
from clarion.delivery.providers.blocking import BlockingCalls
from clarion.delivery.providers.mime import clean_subject, parse_mailbox

# python_http_client logs every request's headers (our API key) and payload (addresses) at debug level.
logging.getLogger("python_http_client").setLevel(logging.WARNING)

# 401/403: SendGrid refuses our key or our sender identity. The message is fine; the setup is not. Retrying (with
# the circuit breaker open meanwhile) lets a fixed key deliver it instead of failing every email for good.
_OUR_CREDENTIALS = frozenset({401, 403})
_RETRYABLE = frozenset({408, 429})


class SendGridProvider:
    """Sends each email as one v3 `mail/send` request."""

    name = "sendgrid"

    def __init__(self, *, api_key: str, sender: Address, host: str, timeout_s: float) -> None:
        self._api_key = api_key
        self._sender = sender
        self._timeout_s = timeout_s
        self._client = SendGridAPIClient(api_key=api_key, host=host.rstrip("/"))
        # urllib's socket timeout inside the thread, so an abandoned call ends soon after the caller gave up.
        self._client.client.timeout = timeout_s
        self._calls = BlockingCalls(name=self.name)

    async def send(self, message: EmailMessage) -> str:
        """POST the mail; return SendGrid's X-Message-Id."""
        try:
            recipient = parse_mailbox(message.to, what="recipient")
        except ValueError as exc:
            raise PermanentFailure(str(exc)) from None
        request = self._request_body(message, recipient)
        secrets = (self._api_key, message.to)
        try:
            response = await self._calls.run(lambda: self._client.send(request), timeout_s=self._timeout_s)
        except TimeoutError:
            raise OutcomeUnknown(f"sendgrid did not answer within {self._timeout_s:g}s") from None
        except HTTPError as exc:
            raise _failure(exc, secrets) from None
        except Exception as exc:  # the contract: nothing but a ProviderError leaves a provider
            text = redact_error(f"sendgrid unreachable: {type(exc).__name__}: {exc}", secrets=secrets)
            # A read timed out (urllib's socket timeout) after the request went out: SendGrid may have taken it.
            raise (OutcomeUnknown if isinstance(exc, TimeoutError) else TransientFailure)(text) from exc
        message_id: str = response.headers.get("X-Message-Id") or ""
        return message_id

    async def close(self) -> None:
        """Release the threads (urllib keeps no connections open)."""
        self._calls.close()

    def _request_body(self, message: EmailMessage, recipient: Address) -> dict[str, Any]:
        """The v3 JSON. Built as a plain dict, not with the helper classes: it is short, and this is exactly what
        SendGrid receives. text/plain must come before text/html."""
        content = [{"type": "text/plain", "value": message.body}]
        if message.html_body:
            content.append({"type": "text/html", "value": message.html_body})
        sender: dict[str, str] = {"email": self._sender.addr_spec}
        if self._sender.display_name:
            sender["name"] = self._sender.display_name
        return {
            "personalizations": [{"to": [{"email": recipient.addr_spec}]}],
            "from": sender,
            "subject": clean_subject(message.subject),
            "content": content,
            "custom_args": {"delivery_id": message.delivery_id},
        }


def _failure(error: HTTPError, secrets: tuple[str, ...]) -> ProviderError:
    """SendGrid's answer as a typed failure, with its own error messages (redacted) as the text."""
    status = int(error.status_code)
    text = redact_error(f"sendgrid answered {status}: {_error_messages(error.body)}", secrets=secrets)
    if status in _RETRYABLE or status >= 500 or status in _OUR_CREDENTIALS:
        return TransientFailure(text, retry_after_s=_retry_after(error.headers))
    return PermanentFailure(text)


def _error_messages(body: bytes | str | None) -> str:
    """'message; message' from SendGrid's {"errors": [{"message": ..., "field": ...}]}, or the raw body."""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        errors = json.loads(raw)["errors"]
        return "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict)) or raw
    except (ValueError, KeyError, TypeError):
        return raw or "(no body)"


def _retry_after(headers: Any) -> float | None:
    """Retry-After when present; else SendGrid's own X-RateLimit-Reset (a Unix time)."""
    if headers is None:
        return None
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if retry_after is not None:
        return retry_after
    try:
        return max(0.0, float(headers.get("X-RateLimit-Reset")) - time.time())
    except (TypeError, ValueError):
        return None
