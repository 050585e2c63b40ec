"""SmtpProvider through aiosmtplib to a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from clarion.delivery.providers.base import PermanentFailure, TransientFailure
from clarion.delivery.providers.mime import parse_mailbox
from clarion.delivery.providers.smtp import SmtpProvider
from tests.conftest import free_port
from tests.integration.delivery.conftest import RECIPIENT, SENDER, email_message
from tests.integration.delivery.smtp_server import (
    self_signed_certificate,
    server_tls_context,
    silent_server,
    smtp_server,
)

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.5


def provider(port: int, **settings: Any) -> SmtpProvider:
    """Plain SMTP to 127.0.0.1 unless `settings` say otherwise."""
    options: dict[str, Any] = {"starttls": False, "timeout_s": TIMEOUT_S}
    options.update(settings)
    return SmtpProvider(host="127.0.0.1", port=port, sender=parse_mailbox(SENDER, what="sender"), **options)


async def test_delivered_message_has_headers_and_both_parts() -> None:
    message = email_message()
    async with smtp_server() as server:
        message_id = await provider(server.port).send(message)

    [received] = server.handler.received
    assert received.mail_from == "noreply@example.com"
    assert received.rcpt_tos == [RECIPIENT]
    mime = received.message
    assert mime["From"] == SENDER
    assert mime["To"] == RECIPIENT
    assert mime["Subject"] == message.subject
    assert mime["Message-ID"] == message_id == f"<{message.delivery_id}@example.com>"
    assert mime["Auto-Submitted"] == "auto-generated"
    assert mime.get_content_type() == "multipart/alternative"
    plain, html = mime.get_body(("plain",)), mime.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == message.body
    assert html.get_content().replace("\r\n", "\n").rstrip("\n") == message.html_body


async def test_text_only_message_is_a_single_plain_part() -> None:
    async with smtp_server() as server:
        await provider(server.port).send(email_message(html_body=""))

    mime = server.handler.received[0].message
    assert mime.get_content_type() == "text/plain"
    assert not mime.is_multipart()


@pytest.mark.parametrize(
    "subject",
    [
        "Hello\r\nBcc: attacker@evil.example\r\nX-Injected: yes",
        "Hello\nBcc: attacker@evil.example",
        "Hello\rBcc: attacker@evil.example",
        "Hello\u2028Bcc: attacker@evil.example\x85X-Injected: yes",
    ],
)
async def test_line_breaks_in_the_subject_cannot_add_a_header(subject: str) -> None:
    async with smtp_server() as server:
        await provider(server.port).send(email_message(subject=subject))

    [received] = server.handler.received
    assert received.rcpt_tos == [RECIPIENT]
    assert "Bcc" not in received.message
    assert "X-Injected" not in received.message
    header_block = received.raw.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in header_block
    assert b"\nX-Injected:" not in header_block
    assert received.message["Subject"].startswith("Hello Bcc: attacker@evil.example")
    assert [name for name in received.message if name == "Subject"] == ["Subject"]


@pytest.mark.parametrize(
    "to",
    [
        "ada@example.com\r\nBcc: attacker@evil.example",
        "Ada\r\n <ada@example.com>",
        "ada@example.com, eve@example.com",
        "not-an-address",
    ],
)
async def test_a_bad_recipient_is_refused_before_connecting(to: str) -> None:
    async with smtp_server() as server:
        with pytest.raises(PermanentFailure) as caught:
            await provider(server.port).send(email_message(to=to))

    assert server.handler.received == []
    assert "ada@" not in str(caught.value)
    assert "eve@" not in str(caught.value)


async def test_mailbox_unavailable_is_permanent() -> None:
    async with smtp_server() as server:
        server.handler.rcpt_reply = "550 5.1.1 <ada.lovelace@example.com>: mailbox unavailable"
        with pytest.raises(PermanentFailure) as caught:
            await provider(server.port).send(email_message())

    assert "smtp 550" in str(caught.value)
    assert RECIPIENT not in str(caught.value)


async def test_try_again_later_is_transient() -> None:
    async with smtp_server() as server:
        server.handler.rcpt_reply = "451 4.7.1 greylisted, try again later"
        with pytest.raises(TransientFailure) as caught:
            await provider(server.port).send(email_message())

    assert "smtp 451" in str(caught.value)


async def test_server_down_is_transient() -> None:
    with pytest.raises(TransientFailure):
        await provider(free_port()).send(email_message())


async def test_a_silent_server_is_transient_within_the_timeout() -> None:
    async with silent_server() as port:
        started = time.monotonic()
        with pytest.raises(TransientFailure) as caught:
            await provider(port).send(email_message())

    assert time.monotonic() - started < TIMEOUT_S + 1
    assert "did not answer" in str(caught.value)


async def test_starttls_and_auth(tmp_path: Path) -> None:
    cert_file, key_file = self_signed_certificate(tmp_path)
    tls = server_tls_context(cert_file, key_file)
    async with smtp_server(tls_context=tls, require_starttls=True, credentials=("clarion", "s3cret-pass")) as server:
        message_id = await provider(
            server.port, starttls=True, username="clarion", password="s3cret-pass", ca_file=cert_file
        ).send(email_message())

    [received] = server.handler.received
    assert received.tls
    assert received.authenticated_as == "clarion"
    assert received.message["Message-ID"] == message_id


async def test_implicit_tls(tmp_path: Path) -> None:
    cert_file, key_file = self_signed_certificate(tmp_path)
    async with smtp_server(implicit_tls=server_tls_context(cert_file, key_file)) as server:
        await provider(server.port, starttls=False, use_tls=True, ca_file=cert_file).send(email_message())

    assert len(server.handler.received) == 1


async def test_a_refused_login_is_transient_and_does_not_quote_the_password(tmp_path: Path) -> None:
    cert_file, key_file = self_signed_certificate(tmp_path)
    tls = server_tls_context(cert_file, key_file)
    async with smtp_server(tls_context=tls, require_starttls=True, credentials=("clarion", "right")) as server:
        with pytest.raises(TransientFailure) as caught:
            await provider(
                server.port, starttls=True, username="clarion", password="wrong-pass", ca_file=cert_file
            ).send(email_message())

    assert server.handler.received == []
    assert "login refused" in str(caught.value)
    assert "wrong-pass" not in str(caught.value)


async def test_an_unverifiable_certificate_is_transient_and_nothing_is_sent(tmp_path: Path) -> None:
    cert_file, key_file = self_signed_certificate(tmp_path)
    async with smtp_server(tls_context=server_tls_context(cert_file, key_file), require_starttls=True) as server:
        with pytest.raises(TransientFailure):
            # No ca_file: the system's CAs do not know the self-signed certificate.
            await provider(server.port, starttls=True).send(email_message())

    assert server.handler.received == []


async def test_a_relay_that_requires_starttls_refuses_plain_smtp_as_transient(tmp_path: Path) -> None:
    """530: a settings problem, retried rather than failing every email for good."""
    cert_file, key_file = self_signed_certificate(tmp_path)
    async with smtp_server(tls_context=server_tls_context(cert_file, key_file), require_starttls=True) as server:
        with pytest.raises(TransientFailure) as caught:
            await provider(server.port, starttls=False).send(email_message())

    assert "smtp 530" in str(caught.value)
    assert server.handler.received == []


def test_starttls_and_implicit_tls_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        provider(25, starttls=True, use_tls=True)
