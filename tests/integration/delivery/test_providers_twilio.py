"""TwilioProvider through httpx to a loopback server that plays Twilio's Messages API."""

from __future__ import annotations

import base64
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from clarion.delivery.providers.base import OutcomeUnknown, PermanentFailure, SmsMessage, TransientFailure
from clarion.delivery.providers.twilio import TwilioProvider
from tests.conftest import free_port
from tests.integration.delivery.fake_http import FakeHttpServer, Reply
from tests.integration.delivery.fake_twilio import AcceptThenHang, FakeTwilio, form_fields, twilio_reply

pytestmark = pytest.mark.integration

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-never-logged-0123"
FROM_NUMBER = "+14155550100"
SERVICE_SID = "MG" + "fedcba9876543210" * 2
RECIPIENT = "+14155550123"
TIMEOUT_S = 0.5


def sms(to: str = RECIPIENT, body: str = "Your code is 123456", delivery_id: str = "d-1") -> SmsMessage:
    return SmsMessage(delivery_id=delivery_id, to=to, body=body)


@pytest.fixture
def twilio(http_server: FakeHttpServer) -> FakeTwilio:
    return FakeTwilio(http_server, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)


@pytest.fixture
async def make_provider() -> AsyncIterator[Callable[..., TwilioProvider]]:
    """Factory: `make_provider(base_url=...)` builds a provider with a short timeout, closed afterwards."""
    made: list[TwilioProvider] = []

    def make(
        *, base_url: str, auth_token: str = AUTH_TOKEN, from_number: str = FROM_NUMBER, service_sid: str = ""
    ) -> TwilioProvider:
        provider = TwilioProvider(
            account_sid=ACCOUNT_SID,
            auth_token=auth_token,
            from_number=from_number,
            messaging_service_sid=service_sid,
            base_url=base_url,
            timeout_s=TIMEOUT_S,
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


async def test_an_accepted_text_returns_the_sid_and_carried_the_form_and_auth(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider]
) -> None:
    sid = await make_provider(base_url=twilio.base_url).send(sms())

    [message] = twilio.messages
    assert sid == message["sid"]
    assert re.fullmatch(r"SM[0-9a-f]{32}", sid)
    assert message["status"] == "queued"
    [request] = twilio.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    credentials = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {credentials}"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form_fields(request) == {"To": RECIPIENT, "Body": "Your code is 123456", "From": FROM_NUMBER}


async def test_a_messaging_service_is_sent_instead_of_the_from_number(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider]
) -> None:
    await make_provider(base_url=twilio.base_url, from_number=FROM_NUMBER, service_sid=SERVICE_SID).send(sms())

    assert form_fields(twilio.requests[0]) == {
        "To": RECIPIENT,
        "Body": "Your code is 123456",
        "MessagingServiceSid": SERVICE_SID,
    }
    assert twilio.messages[0]["status"] == "accepted"


async def test_a_unicode_body_arrives_intact(twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider]) -> None:
    body = "Bestellung versandt 📦 — Grüße & {danke}"

    await make_provider(base_url=twilio.base_url).send(sms(body=body))

    assert twilio.messages[0]["body"] == body
    assert twilio.messages[0]["num_segments"] == "1"


async def test_rate_limit_is_transient_with_retry_after(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider]
) -> None:
    twilio.then(twilio_reply(429, 20429, "Too Many Requests", {"Retry-After": "7"}))

    with pytest.raises(TransientFailure) as caught:
        await make_provider(base_url=twilio.base_url).send(sms())

    assert not isinstance(caught.value, OutcomeUnknown)
    assert caught.value.retry_after_s == 7
    assert str(caught.value) == "twilio 429 code 20429: Too Many Requests"


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_transient(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider], status: int
) -> None:
    twilio.then(twilio_reply(status, 20500, "Internal Server Error"))

    with pytest.raises(TransientFailure) as caught:
        await make_provider(base_url=twilio.base_url).send(sms())

    assert not isinstance(caught.value, OutcomeUnknown)
    assert caught.value.retry_after_s is None
    assert f"twilio {status} code 20500" in str(caught.value)
    assert len(twilio.requests) == 1  # no retry inside the provider


async def test_a_503_without_twilio_body_is_transient_with_retry_after(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider]
) -> None:
    twilio.then(Reply(503, b"<html>Service Unavailable</html>", {"Retry-After": "3"}))

    with pytest.raises(TransientFailure) as caught:
        await make_provider(base_url=twilio.base_url).send(sms())

    assert caught.value.retry_after_s == 3
    assert str(caught.value) == "twilio 503: <html>Service Unavailable</html>"


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 30001), (400, 20429), (429, 30001), (404, 30001)],
)
async def test_twilio_busy_codes_are_transient_whatever_the_status(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider], status: int, code: int
) -> None:
    twilio.then(twilio_reply(status, code, "Queue overflow"))

    with pytest.raises(TransientFailure) as caught:
        await make_provider(base_url=twilio.base_url).send(sms())

    assert f"twilio {status} code {code}: Queue overflow" == str(caught.value)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, 21610, "Attempt to send to unsubscribed recipient"),
        (400, 21211, "The 'To' number is not a valid phone number."),
        (400, 21614, "'To' number is not a valid mobile number"),
        (400, 21408, "Permission to send an SMS has not been enabled for the region indicated by the 'To' number"),
        (400, 21612, "The 'To' phone number is not currently reachable via SMS"),
        (400, 21617, "The concatenated message body exceeds the 1600 character limit"),
        (400, 21999, "An error Clarion has never heard of"),
        (404, 20404, "The requested resource was not found"),
        (422, 21000, "Unprocessable"),
    ],
)
async def test_refusals_about_the_recipient_or_the_text_are_permanent(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider], status: int, code: int, message: str
) -> None:
    twilio.then(twilio_reply(status, code, message))

    with pytest.raises(PermanentFailure) as caught:
        await make_provider(base_url=twilio.base_url).send(sms())

    assert str(caught.value) == f"twilio {status} code {code}: {message}"


async def test_a_number_twilio_cannot_read_is_permanent_and_not_quoted(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider]
) -> None:
    # Not E.164, so the generic phone pattern would not catch it: the provider masks the recipient it was given.
    with pytest.raises(PermanentFailure) as caught:
        await make_provider(base_url=twilio.base_url).send(sms(to="5551234"))

    assert str(caught.value) == "twilio 400 code 21211: The 'To' number [redacted] is not a valid phone number."
    assert twilio.messages == []


@pytest.mark.parametrize(
    ("to", "body", "code"),
    [("", "hello", 21604), (RECIPIENT, "", 21602), (RECIPIENT, "a" * 1601, 21617)],
)
async def test_what_twilio_validates_is_permanent(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider], to: str, body: str, code: int
) -> None:
    with pytest.raises(PermanentFailure) as caught:
        await make_provider(base_url=twilio.base_url).send(sms(to=to, body=body))

    assert f"twilio 400 code {code}: " in str(caught.value)


async def test_refused_credentials_are_transient_so_fixing_them_delivers(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider]
) -> None:
    with pytest.raises(TransientFailure) as caught:
        await make_provider(base_url=twilio.base_url, auth_token="wrong-token-0123456789").send(sms())

    assert not isinstance(caught.value, OutcomeUnknown)
    assert str(caught.value) == "twilio 401 code 20003: Authenticate"
    assert twilio.messages == []


async def test_a_forbidden_account_is_transient(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider]
) -> None:
    twilio.then(twilio_reply(403, 20403, "Forbidden"))

    with pytest.raises(TransientFailure) as caught:
        await make_provider(base_url=twilio.base_url).send(sms())

    assert str(caught.value) == "twilio 403 code 20403: Forbidden"


@pytest.mark.parametrize("status", [400, 401, 500])
async def test_an_error_text_never_holds_the_number_nor_the_token(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider], status: int
) -> None:
    number = "0049301234567"  # not E.164: only the provider's own masking catches it
    twilio.then(twilio_reply(status, 21211, f"number {number} with token {AUTH_TOKEN}"))

    with pytest.raises((PermanentFailure, TransientFailure)) as caught:
        await make_provider(base_url=twilio.base_url).send(sms(to=number))

    text = str(caught.value)
    assert number not in text
    assert AUTH_TOKEN not in text
    assert "[redacted]" in text


async def test_a_server_that_never_answers_is_an_unknown_outcome_within_the_timeout(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider]
) -> None:
    twilio.then(Reply(hang=True))
    started = time.monotonic()

    with pytest.raises(OutcomeUnknown) as caught:
        await make_provider(base_url=twilio.base_url).send(sms())

    assert time.monotonic() - started < TIMEOUT_S + 1
    assert str(caught.value) == f"twilio did not answer within {TIMEOUT_S:g}s"


async def test_a_timeout_after_twilio_queued_the_text_is_an_unknown_outcome(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider]
) -> None:
    twilio.then(AcceptThenHang())

    with pytest.raises(OutcomeUnknown):
        await make_provider(base_url=twilio.base_url).send(sms())

    assert len(twilio.messages) == 1  # a retry would be a duplicate: that is what OutcomeUnknown records


async def test_nothing_listening_is_transient_and_not_an_unknown_outcome(
    make_provider: Callable[..., TwilioProvider],
) -> None:
    with pytest.raises(TransientFailure) as caught:
        await make_provider(base_url=f"http://127.0.0.1:{free_port()}").send(sms())

    assert not isinstance(caught.value, OutcomeUnknown)
    assert "twilio unreachable: ConnectError" in str(caught.value)


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full, so a new connection hangs in the handshake (Linux drops its SYNs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    queued = []
    for _ in range(3):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        queued.append(client)
    yield port
    for client in queued:
        client.close()
    listener.close()


async def test_a_connection_that_never_opens_is_transient_and_not_an_unknown_outcome(
    unanswered_port: int, make_provider: Callable[..., TwilioProvider]
) -> None:
    started = time.monotonic()

    with pytest.raises(TransientFailure) as caught:
        await make_provider(base_url=f"http://127.0.0.1:{unanswered_port}").send(sms())

    assert time.monotonic() - started < TIMEOUT_S + 1
    assert not isinstance(caught.value, OutcomeUnknown)
    assert str(caught.value) == f"twilio unreachable within {TIMEOUT_S:g}s"


async def test_an_acceptance_without_a_sid_is_not_sent_again(
    twilio: FakeTwilio, make_provider: Callable[..., TwilioProvider]
) -> None:
    twilio.then(Reply(201, {"status": "queued"}))

    assert await make_provider(base_url=twilio.base_url).send(sms()) == ""


def test_a_provider_without_a_sender_is_refused() -> None:
    with pytest.raises(ValueError, match="From number or a messaging service"):
        TwilioProvider(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, timeout_s=TIMEOUT_S)
