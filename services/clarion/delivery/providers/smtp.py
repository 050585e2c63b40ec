"""Email over SMTP with aiosmtplib: one connection per email (connect, STARTTLS, AUTH, send, QUIT).

A connection per email keeps failure handling simple (no half-dead pooled connections) and costs a few
milliseconds against a relay; the worker's prefetch bounds how many connections are open at once.
"""

from __future__ import annotations

import asyncio
import ssl
from email.headerregistry import Address
from pathlib import Path

import aiosmtplib

from clarion.delivery.providers.base import (
    EmailMessage,
    OutcomeUnknown,
    PermanentFailure,
    ProviderError,
    TransientFailure,
    redact_error,
)
from clarion.delivery.providers.mime import build_mime, parse_mailbox

# Authentication required, mechanism too weak, credentials invalid, encryption required.
_OUR_SETUP = frozenset({530, 534, 535, 538})


class SmtpProvider:
    """Hands each email to an SMTP relay and returns its Message-ID (stable per delivery)."""

    name = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: Address,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        use_tls: bool = False,
        ca_file: Path | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if starttls and use_tls:
            raise ValueError("choose STARTTLS or implicit TLS, not both")
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username or None
        self._password = password or None
        # aiosmtplib's start_tls=None means "if the server offers it": say exactly what was configured instead,
        # so a relay that stops offering STARTTLS is an error rather than a silent downgrade.
        self._starttls = starttls
        self._use_tls = use_tls
        self._tls_context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self._timeout_s = timeout_s

    async def send(self, message: EmailMessage) -> str:
        """Send one email; the returned id is the Message-ID header it carries."""
        try:
            recipient = parse_mailbox(message.to, what="recipient")
        except ValueError as exc:
            raise PermanentFailure(str(exc)) from None
        mime = build_mime(message, sender=self._sender, recipient=recipient)
        secrets = (message.to, recipient.addr_spec, self._password or "")
        try:
            # aiosmtplib's timeout is per command; this bounds the whole conversation.
            async with asyncio.timeout(self._timeout_s):
                await aiosmtplib.send(
                    mime,
                    sender=self._sender.addr_spec,
                    recipients=[recipient.addr_spec],
                    hostname=self._host,
                    port=self._port,
                    username=self._username,
                    password=self._password,
                    use_tls=self._use_tls,
                    start_tls=self._starttls,
                    tls_context=self._tls_context,
                    timeout=self._timeout_s,
                )
        except TimeoutError:
            raise OutcomeUnknown(f"smtp server did not answer within {self._timeout_s:g}s") from None
        except aiosmtplib.SMTPException as exc:
            raise _failure(exc, secrets) from None
        except Exception as exc:  # the contract: nothing but a ProviderError leaves a provider
            text = redact_error(f"smtp failed: {type(exc).__name__}: {exc}", secrets=secrets)
            raise TransientFailure(text) from exc
        return str(mime["Message-ID"])

    async def close(self) -> None:
        """Nothing is held between emails."""


def _failure(error: aiosmtplib.SMTPException, secrets: tuple[str, ...]) -> ProviderError:
    """SMTP reply codes as failures: 4xx is 'try again later' by definition (RFC 5321 §4.2.1), 5xx is final.
    Except the replies about our login or TLS (RFC 4954: 530, 534, 535, 538): those are the relay refusing our
    setup, not the email, so they are retried like a 4xx and fixing the settings delivers the email."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
        error = error.recipients[0]
    if isinstance(error, aiosmtplib.SMTPAuthenticationError):
        return TransientFailure(f"smtp login refused ({error.code}); check CLARION_SMTP_USERNAME/PASSWORD")
    if isinstance(error, aiosmtplib.SMTPResponseException):
        text = redact_error(f"smtp {error.code}: {error.message}", secrets=secrets)
        if 500 <= error.code < 600 and error.code not in _OUR_SETUP:
            return PermanentFailure(text)
        return TransientFailure(text)
    # Connection refused or dropped, timeouts, TLS not offered or not verified: nothing was accepted.
    return TransientFailure(redact_error(f"smtp failed: {type(error).__name__}: {error}", secrets=secrets))
