"""Fixtures for the provider tests: loopback fakes of the providers' servers, and captured logs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from clarion.delivery.providers.base import EmailMessage
from tests.integration.delivery.fake_fcm import private_key
from tests.integration.delivery.fake_http import FakeHttpServer

RECIPIENT = "ada.lovelace@example.com"
SENDER = "Clarion <noreply@example.com>"


def email_message(delivery_id: str = "0b9e7c1e-5d2f-4c3a-9f7e-1a2b3c4d5e6f", **changes: str) -> EmailMessage:
    """An email as the worker would build it; keyword arguments replace fields."""
    fields = {
        "delivery_id": delivery_id,
        "to": RECIPIENT,
        "subject": "Your order has shipped",
        "body": "Hello Ada,\nyour order is on its way.",
        "html_body": "<p>Hello Ada,<br>your order is on its way.</p>",
    }
    fields.update(changes)
    return EmailMessage(**fields)


@pytest.fixture
def http_server() -> Iterator[FakeHttpServer]:
    """A scripted HTTP server on loopback, stopped (and its hung requests released) afterwards."""
    with FakeHttpServer() as server:
        yield server


@pytest.fixture(scope="session")
def service_account_key() -> rsa.RSAPrivateKey:
    """One RSA key for the session's throwaway service accounts."""
    return private_key()
