"""A real SMTP server (aiosmtpd) on loopback, in the test's own event loop, that records what it receives and can
refuse recipients; plus a self-signed certificate for the STARTTLS path."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email
import email.policy
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Received:
    """One accepted email: the SMTP envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    authenticated_as: str | None
    tls: bool


@dataclass
class RecordingHandler:
    """aiosmtpd handler: records every message; `rcpt_reply` (e.g. "550 5.1.1 no such user") refuses recipients."""

    received: list[Received] = field(default_factory=list)
    rcpt_reply: str | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.received.append(
            Received(str(envelope.mail_from), list(envelope.rcpt_tos), message, raw, login, session.ssl is not None)
        )
        return "250 2.0.0 Ok: queued"


@dataclass(frozen=True)
class SmtpServer:
    """Where the server listens and what it has received."""

    host: str
    port: int
    handler: RecordingHandler


@contextlib.asynccontextmanager
async def smtp_server(
    *,
    tls_context: ssl.SSLContext | None = None,
    require_starttls: bool = False,
    credentials: tuple[str, str] | None = None,
    implicit_tls: ssl.SSLContext | None = None,
) -> AsyncIterator[SmtpServer]:
    """Serve SMTP on 127.0.0.1:<free port>; with `credentials`, AUTH (after STARTTLS, aiosmtpd's default) is
    required and checked against them; with `implicit_tls`, TLS from the first byte (port 465 style)."""
    loop = asyncio.get_running_loop()
    handler = RecordingHandler()

    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == credentials
        # handled=False: aiosmtpd itself answers a failure with 535 (True would leave the client waiting).
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    def protocol() -> SMTP:
        return SMTP(
            handler,
            hostname="localhost",
            tls_context=tls_context,
            require_starttls=require_starttls,
            authenticator=authenticate if credentials else None,
            auth_required=credentials is not None,
            loop=loop,
        )

    # aiosmtpd logs every command and message line: the fake's chatter, kept out of the logs tests inspect.
    server_log = logging.getLogger("mail.log")
    level = server_log.level
    server_log.setLevel(logging.WARNING)
    server = await loop.create_server(protocol, "127.0.0.1", 0, ssl=implicit_tls)
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        server.close()
        await server.wait_closed()
        server_log.setLevel(level)


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts and never says a word (no SMTP greeting): a hung relay. Yields its port."""
    release = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        release.set()
        server.close()
        await server.wait_closed()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A CA-flagged self-signed certificate for 127.0.0.1 and localhost; returns (cert file, key file). The
    cert file doubles as the CA bundle the client verifies it with."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clarion test smtp")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The server side of STARTTLS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
