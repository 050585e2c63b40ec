"""Choosing the providers from the settings, and refusing settings that cannot work, naming the variable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from clarion.core.config import SettingsError, load_settings
from clarion.delivery.providers.base import EmailProvider, PushProvider
from clarion.delivery.providers.factory import create_email_provider, create_push_provider
from tests.integration.delivery.conftest import email_message
from tests.integration.delivery.fake_fcm import write_service_account

pytestmark = pytest.mark.integration


@pytest.fixture
async def closing() -> AsyncIterator[list[EmailProvider | PushProvider]]:
    """Providers appended here are closed after the test."""
    providers: list[EmailProvider | PushProvider] = []
    yield providers
    for provider in providers:
        await provider.close()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "file"),
        ({"smtp_host": "smtp.example.com"}, "smtp"),
        ({"smtp_host": "smtp.example.com", "sendgrid_api_key": "SG.k.s"}, "sendgrid"),
        ({"sendgrid_api_key": ""}, "file"),
        ({"email_provider": "smtp", "smtp_host": "smtp.example.com", "sendgrid_api_key": "SG.k.s"}, "smtp"),
        ({"email_provider": "file", "sendgrid_api_key": "SG.k.s"}, "file"),
    ],
)
async def test_email_provider_choice(
    tmp_path: Path, closing: list[EmailProvider | PushProvider], settings: dict[str, Any], expected: str
) -> None:
    provider = create_email_provider(load_settings(data_dir=tmp_path, **settings))
    closing.append(provider)

    assert provider.name == expected


async def test_file_provider_writes_under_data_dir_by_default(
    tmp_path: Path, closing: list[EmailProvider | PushProvider]
) -> None:
    provider = create_email_provider(load_settings(data_dir=tmp_path))
    closing.append(provider)

    path = await provider.send(email_message(delivery_id="d-1"))

    assert path == str(tmp_path / "outbox" / "d-1.eml")


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"email_provider": "sendgrid"}, "CLARION_SENDGRID_API_KEY"),
        ({"email_provider": "smtp"}, "CLARION_SMTP_HOST"),
        ({"smtp_host": "h", "smtp_starttls": True, "smtp_use_tls": True}, "CLARION_SMTP_USE_TLS"),
        ({"email_from": "Clarion <noreply@example.com>\r\nBcc: x@example.com"}, "CLARION_EMAIL_FROM"),
        ({"email_from": "not an address"}, "CLARION_EMAIL_FROM"),
    ],
)
def test_unusable_email_settings_fail_at_start_naming_the_variable(
    tmp_path: Path, settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        create_email_provider(load_settings(data_dir=tmp_path, **settings))


async def test_push_is_simulated_without_credentials(closing: list[EmailProvider | PushProvider]) -> None:
    provider = create_push_provider(load_settings())
    closing.append(provider)

    assert (provider.name, provider.simulated) == ("simulated", True)


async def test_push_is_fcm_with_a_service_account(
    tmp_path: Path, service_account_key: rsa.RSAPrivateKey, closing: list[EmailProvider | PushProvider]
) -> None:
    account = write_service_account(tmp_path, key=service_account_key, token_uri="http://127.0.0.1:9/token")

    provider = create_push_provider(load_settings(fcm_credentials_file=account.path))
    closing.append(provider)

    assert (provider.name, provider.simulated) == ("fcm", False)


@pytest.mark.parametrize("content", [None, "{}", "not json", '{"type": "authorized_user"}'])
def test_an_unusable_credentials_file_fails_at_start(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "service-account.json"
    if content is not None:
        path.write_text(content)

    with pytest.raises(SettingsError, match="CLARION_FCM_CREDENTIALS_FILE"):
        create_push_provider(load_settings(fcm_credentials_file=path))
