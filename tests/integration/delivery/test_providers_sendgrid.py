"""SendGridProvider through the real `sendgrid` client to a loopback server that plays SendGrid's v3 API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest

from clarion.delivery.providers.base import PermanentFailure, TransientFailure
from clarion.delivery.providers.mime import parse_mailbox
from clarion.delivery.providers.sendgrid import SendGridProvider
from tests.conftest import free_port
from tests.integration.delivery.conftest import RECIPIENT, SENDER, email_message
from tests.integration.delivery.fake_http import FakeHttpServer, Reply
from tests.integration.delivery.fake_sendgrid import FakeSendGrid, sendgrid_errors

pytestmark = pytest.mark.integration

API_KEY = "SG.test-key-id.test-key-secret-never-logged"
TIMEOUT_S = 0.5


@pytest.fixture
def sendgrid(http_server: FakeHttpServer) -> FakeSendGrid:
    return FakeSendGrid(http_server, api_key=API_KEY)


@pytest.fixture
async def make_provider() -> AsyncIterator[Callable[..., SendGridProvider]]:
    """Factory: `make_provider(host=...)` builds a provider with a short timeout, closed afterwards."""
    made: list[SendGridProvider] = []

    def make(*, host: str, api_key: str = API_KEY) -> SendGridProvider:
        provider = SendGridProvider(
            api_key=api_key, sender=parse_mailbox(SENDER, what="sender"), host=host, timeout_s=TIMEOUT_S
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


async def test_accepted_mail_returns_the_message_id_and_carries_everything(
    sendgrid: FakeSendGrid, make_provider: Callable[..., SendGridProvider]
) -> None:
    message = email_message(subject="Shipped\r\nBcc: someone@example.net")

    message_id = await make_provider(host=sendgrid.host).send(message)

    assert message_id == "sg-message-1"
    [request] = sendgrid.requests
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    mail = request.json()
    assert mail["personalizations"] == [{"to": [{"email": RECIPIENT}]}]
    assert mail["from"] == {"email": "noreply@example.com", "name": "Clarion"}
    assert mail["subject"] == "Shipped Bcc: someone@example.net"  # one line, whatever the template produced
    assert mail["content"] == [
        {"type": "text/plain", "value": message.body},
        {"type": "text/html", "value": message.html_body},
    ]
    assert mail["custom_args"] == {"delivery_id": message.delivery_id}


async def test_text_only_mail_has_no_html_part(
    sendgrid: FakeSendGrid, make_provider: Callable[..., SendGridProvider]
) -> None:
    await make_provider(host=sendgrid.host).send(email_message(html_body=""))

    assert [c["type"] for c in sendgrid.requests[0].json()["content"]] == ["text/plain"]


async def test_bad_request_is_permanent_and_quotes_sendgrid_without_the_address(
    sendgrid: FakeSendGrid, make_provider: Callable[..., SendGridProvider]
) -> None:
    sendgrid.then(Reply(400, sendgrid_errors(f"Does not contain a valid address: {RECIPIENT}")))

    with pytest.raises(PermanentFailure) as caught:
        await make_provider(host=sendgrid.host).send(email_message())

    assert not isinstance(caught.value, TransientFailure)
    assert "sendgrid answered 400: Does not contain a valid address" in str(caught.value)
    assert RECIPIENT not in str(caught.value)


async def test_rate_limit_is_transient_with_retry_after(
    sendgrid: FakeSendGrid, make_provider: Callable[..., SendGridProvider]
) -> None:
    sendgrid.then(Reply(429, sendgrid_errors("too many requests"), {"Retry-After": "7"}))

    with pytest.raises(TransientFailure) as caught:
        await make_provider(host=sendgrid.host).send(email_message())

    assert caught.value.retry_after_s == 7


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_transient(
    sendgrid: FakeSendGrid, make_provider: Callable[..., SendGridProvider], status: int
) -> None:
    sendgrid.then(Reply(status, sendgrid_errors("try later")))

    with pytest.raises(TransientFailure) as caught:
        await make_provider(host=sendgrid.host).send(email_message())

    assert caught.value.retry_after_s is None
    assert len(sendgrid.requests) == 1


async def test_a_refused_key_is_transient_so_fixing_it_delivers(
    sendgrid: FakeSendGrid, make_provider: Callable[..., SendGridProvider]
) -> None:
    with pytest.raises(TransientFailure) as caught:
        await make_provider(host=sendgrid.host, api_key="SG.wrong.key").send(email_message())

    assert "401" in str(caught.value)
    assert "SG.wrong.key" not in str(caught.value)


async def test_a_hanging_server_is_transient_within_the_timeout(
    sendgrid: FakeSendGrid, make_provider: Callable[..., SendGridProvider]
) -> None:
    sendgrid.then(Reply(hang=True))
    started = time.monotonic()

    with pytest.raises(TransientFailure) as caught:
        await make_provider(host=sendgrid.host).send(email_message())

    assert time.monotonic() - started < TIMEOUT_S + 1
    assert "did not answer" in str(caught.value)


async def test_nothing_listening_is_transient(make_provider: Callable[..., SendGridProvider]) -> None:
    with pytest.raises(TransientFailure) as caught:
        await make_provider(host=f"http://127.0.0.1:{free_port()}").send(email_message())

    assert "unreachable" in str(caught.value)


async def test_an_invalid_recipient_is_permanent_and_never_sent(
    sendgrid: FakeSendGrid, make_provider: Callable[..., SendGridProvider]
) -> None:
    with pytest.raises(PermanentFailure):
        await make_provider(host=sendgrid.host).send(email_message(to="ada@example.com\r\nBcc: eve@example.com"))

    assert sendgrid.requests == []
