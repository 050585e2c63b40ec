"""Whatever the providers do, succeed or fail, no key, token, password or address reaches the logs or the error
texts that end up in attempt rows."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from clarion.core.config import load_settings
from clarion.delivery.providers.base import (
    PermanentFailure,
    PushMessage,
    TransientFailure,
    UnregisteredToken,
)
from clarion.delivery.providers.factory import create_email_provider, create_push_provider
from tests.integration.delivery.conftest import RECIPIENT, email_message
from tests.integration.delivery.fake_fcm import ACCESS_TOKEN, FakeFcm, fcm_error, write_service_account
from tests.integration.delivery.fake_http import FakeHttpServer, Reply
from tests.integration.delivery.fake_sendgrid import FakeSendGrid, sendgrid_errors
from tests.integration.delivery.smtp_server import self_signed_certificate, server_tls_context, smtp_server

pytestmark = pytest.mark.integration

API_KEY = "SG.logtest-id.logtest-secret"
PUSH_TOKEN = "push-token-for-the-log-test"
SMTP_PASSWORD = "smtp-password-for-the-log-test"
SECRETS = (API_KEY, "logtest-secret", PUSH_TOKEN, ACCESS_TOKEN, SMTP_PASSWORD, RECIPIENT, "ada.lovelace")


async def test_no_secret_in_logs_or_errors(
    tmp_path: Path,
    http_server: FakeHttpServer,
    service_account_key: rsa.RSAPrivateKey,
    log_output: io.StringIO,
) -> None:
    errors: list[str] = []

    sendgrid = FakeSendGrid(http_server, api_key=API_KEY)
    email = create_email_provider(
        load_settings(sendgrid_api_key=API_KEY, sendgrid_host=sendgrid.host, provider_timeout_s=2)
    )
    await email.send(email_message())
    sendgrid.then(Reply(400, sendgrid_errors(f"invalid recipient {RECIPIENT}")))
    with pytest.raises(PermanentFailure) as caught:
        await email.send(email_message())
    errors.append(str(caught.value))
    await email.close()

    cert_file, key_file = self_signed_certificate(tmp_path)
    tls = server_tls_context(cert_file, key_file)
    async with smtp_server(tls_context=tls, require_starttls=True, credentials=("clarion", SMTP_PASSWORD)) as server:
        smtp_settings = {"smtp_host": server.host, "smtp_port": server.port, "smtp_ca_file": cert_file}
        smtp = create_email_provider(
            load_settings(smtp_username="clarion", smtp_password=SMTP_PASSWORD, **smtp_settings)
        )
        await smtp.send(email_message())
        server.handler.rcpt_reply = f"550 5.1.1 <{RECIPIENT}>: no such user"
        with pytest.raises(PermanentFailure) as caught:
            await smtp.send(email_message())
        errors.append(str(caught.value))
        await smtp.close()
    assert len(server.handler.received) == 1

    fcm = FakeFcm(http_server, service_account_key.public_key())
    account = write_service_account(tmp_path, key=service_account_key, token_uri=fcm.token_uri)
    push = create_push_provider(
        load_settings(fcm_credentials_file=account.path, fcm_url=http_server.url, provider_timeout_s=2)
    )
    message = PushMessage("d-1", "device-1", PUSH_TOKEN, "android", "Title", "Body", {})
    await push.send(message)
    fcm.then(
        fcm_error(
            400, "INVALID_ARGUMENT", f"bad token {PUSH_TOKEN}", error_code="INVALID_ARGUMENT", field="message.token"
        ),
        fcm_error(503, "UNAVAILABLE", f"unavailable for {PUSH_TOKEN}"),
    )
    with pytest.raises(UnregisteredToken) as unregistered:
        await push.send(message)
    with pytest.raises(TransientFailure) as transient:
        await push.send(message)
    errors += [str(unregistered.value), str(transient.value)]
    await push.close()

    output = log_output.getvalue()
    assert "email_provider_selected" in output, "the test must capture the providers' logs"
    for secret in SECRETS:
        assert secret not in output
        for error in errors:
            assert secret not in error, error
