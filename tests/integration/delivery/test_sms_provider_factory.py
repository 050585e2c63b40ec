"""Choosing the SMS provider from the settings, and refusing Twilio settings that cannot work, naming the variable."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clarion.core.config import SettingsError, load_settings
from clarion.delivery.providers.base import SmsMessage, SmsProvider
from clarion.delivery.providers.factory import create_sms_provider
from tests.integration.delivery.fake_http import FakeHttpServer
from tests.integration.delivery.fake_twilio import FakeTwilio, form_fields

pytestmark = pytest.mark.integration

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-never-logged-0123"
TWILIO = {"twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN, "twilio_from_number": "+14155550100"}


@pytest.fixture
async def closing() -> AsyncIterator[list[SmsProvider]]:
    """Providers appended here are closed after the test."""
    providers: list[SmsProvider] = []
    yield providers
    for provider in providers:
        await provider.close()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "file"),
        (TWILIO, "twilio"),
        ({**TWILIO, "twilio_from_number": None, "twilio_messaging_service_sid": "MG1"}, "twilio"),
        ({"twilio_account_sid": ""}, "file"),
        ({"sms_provider": "file", **TWILIO}, "file"),
        ({"sms_provider": "simulated", **TWILIO}, "simulated"),
        ({"sms_provider": "simulated"}, "simulated"),
        ({"sms_provider": "twilio", **TWILIO}, "twilio"),
    ],
)
async def test_sms_provider_choice(
    tmp_path: Path, closing: list[SmsProvider], settings: dict[str, Any], expected: str
) -> None:
    provider = create_sms_provider(load_settings(data_dir=tmp_path, **settings))
    closing.append(provider)

    assert provider.name == expected


async def test_the_file_provider_writes_under_the_email_outbox(tmp_path: Path, closing: list[SmsProvider]) -> None:
    provider = create_sms_provider(load_settings(data_dir=tmp_path))
    closing.append(provider)

    await provider.send(SmsMessage(delivery_id="d-1", to="+14155550123", body="hi"))

    assert json.loads((tmp_path / "outbox" / "sms" / "d-1.json").read_text())["body"] == "hi"


async def test_the_file_provider_follows_outbox_dir(tmp_path: Path, closing: list[SmsProvider]) -> None:
    provider = create_sms_provider(load_settings(data_dir=tmp_path / "data", outbox_dir=tmp_path / "elsewhere"))
    closing.append(provider)

    await provider.send(SmsMessage(delivery_id="d-1", to="+14155550123", body="hi"))

    assert (tmp_path / "elsewhere" / "sms" / "d-1.json").exists()


async def test_twilio_is_built_from_the_settings(http_server: FakeHttpServer, closing: list[SmsProvider]) -> None:
    twilio = FakeTwilio(http_server, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    provider = create_sms_provider(
        load_settings(**TWILIO, twilio_messaging_service_sid="MG1", twilio_base_url=twilio.base_url)
    )
    closing.append(provider)

    sid = await provider.send(SmsMessage(delivery_id="d-1", to="+14155550123", body="hi"))

    assert sid == twilio.messages[0]["sid"]
    assert form_fields(twilio.requests[0]) == {"To": "+14155550123", "Body": "hi", "MessagingServiceSid": "MG1"}


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"sms_provider": "twilio"}, ["CLARION_TWILIO_ACCOUNT_SID", "CLARION_TWILIO_AUTH_TOKEN"]),
        ({**TWILIO, "twilio_auth_token": None}, ["CLARION_TWILIO_AUTH_TOKEN"]),
        ({**TWILIO, "twilio_auth_token": ""}, ["CLARION_TWILIO_AUTH_TOKEN"]),
        ({**TWILIO, "sms_provider": "twilio", "twilio_account_sid": None}, ["CLARION_TWILIO_ACCOUNT_SID"]),
        (
            {**TWILIO, "twilio_from_number": None},
            ["CLARION_TWILIO_FROM_NUMBER or CLARION_TWILIO_MESSAGING_SERVICE_SID"],
        ),
        (
            {"twilio_account_sid": ACCOUNT_SID},
            ["CLARION_TWILIO_AUTH_TOKEN", "CLARION_TWILIO_FROM_NUMBER or CLARION_TWILIO_MESSAGING_SERVICE_SID"],
        ),
    ],
)
def test_unusable_twilio_settings_fail_at_start_naming_each_variable(
    tmp_path: Path, settings: dict[str, Any], named: list[str]
) -> None:
    with pytest.raises(SettingsError) as caught:
        create_sms_provider(load_settings(data_dir=tmp_path, **settings))

    for variable in named:
        assert variable in str(caught.value)
    assert AUTH_TOKEN not in str(caught.value)


def test_the_settings_come_from_clarion_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_SMS_PROVIDER", "twilio")
    monkeypatch.setenv("CLARION_TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("CLARION_TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("CLARION_TWILIO_FROM_NUMBER", "+14155550100")
    monkeypatch.setenv("CLARION_TWILIO_MESSAGING_SERVICE_SID", "MG1")
    monkeypatch.setenv("CLARION_TWILIO_BASE_URL", "http://127.0.0.1:9")

    settings = load_settings()

    assert settings.sms_provider == "twilio"
    assert settings.twilio_account_sid == ACCOUNT_SID
    assert settings.twilio_auth_token is not None
    assert settings.twilio_auth_token.get_secret_value() == AUTH_TOKEN
    assert AUTH_TOKEN not in repr(settings)
    assert (settings.twilio_from_number, settings.twilio_messaging_service_sid) == ("+14155550100", "MG1")
    assert settings.twilio_base_url == "http://127.0.0.1:9"


def test_an_unknown_sms_provider_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_SMS_PROVIDER", "nexmo")

    with pytest.raises(SettingsError, match="CLARION_SMS_PROVIDER"):
        load_settings()


def test_local_mode_never_loads_the_twilio_module(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from clarion.core.config import load_settings\n"
        "from clarion.delivery.providers.factory import create_sms_provider\n"
        f"create_sms_provider(load_settings(data_dir={str(tmp_path)!r}))\n"
        "create_sms_provider(load_settings(sms_provider='simulated'))\n"
        "assert 'clarion.delivery.providers.twilio' not in sys.modules\n"
    )

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
