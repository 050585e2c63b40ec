"""FcmProvider through the real firebase-admin (and google-auth) to loopback fakes of FCM v1 and Google OAuth."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from clarion.delivery.providers.base import PermanentFailure, PushMessage, TransientFailure, UnregisteredToken
from clarion.delivery.providers.fcm import FcmProvider
from tests.conftest import free_port
from tests.integration.delivery.fake_fcm import (
    ACCESS_TOKEN,
    PROJECT_ID,
    FakeFcm,
    ServiceAccount,
    fcm_error,
    write_service_account,
)
from tests.integration.delivery.fake_http import FakeHttpServer, Reply

pytestmark = pytest.mark.integration

TOKEN = "device-registration-token:APA91b-never-logged"
DELIVERY_ID = "4f0c2a8e-7d1b-4e5f-a9c3-2b6d8e0f1a2c"
TIMEOUT_S = 0.5


def push_message(**changes: object) -> PushMessage:
    fields: dict[str, object] = {
        "delivery_id": DELIVERY_ID,
        "device_id": "device-1",
        "token": TOKEN,
        "platform": "android",
        "title": "Your order has shipped",
        "body": "It arrives on Tuesday.",
        "data": {"order_id": "o-42"},
    }
    fields.update(changes)
    return PushMessage(**fields)


@pytest.fixture
def fcm(http_server: FakeHttpServer) -> FakeFcm:
    return FakeFcm(http_server)


@pytest.fixture
def service_account(tmp_path: Path, fcm: FakeFcm, service_account_key: rsa.RSAPrivateKey) -> ServiceAccount:
    account = write_service_account(tmp_path, key=service_account_key, token_uri=fcm.token_uri)
    fcm.account_key = account.public_key
    return account


@pytest.fixture
async def make_provider(fcm: FakeFcm, service_account: ServiceAccount) -> AsyncIterator[Callable[[], FcmProvider]]:
    """Factory of providers aimed at the fakes, closed afterwards."""
    made: list[FcmProvider] = []

    def make() -> FcmProvider:
        provider = FcmProvider(credentials_file=service_account.path, timeout_s=TIMEOUT_S, fcm_url=fcm.server.url)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


async def test_accepted_push_returns_fcm_message_name_and_carries_the_delivery_id(
    fcm: FakeFcm, make_provider: Callable[[], FcmProvider]
) -> None:
    message_id = await make_provider().send(push_message())

    assert message_id == f"projects/{PROJECT_ID}/messages/1"
    assert len(fcm.token_requests) == 1  # a real JWT-bearer grant, signed with the service account's key
    [send] = fcm.sends
    assert send.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    message = send.json()["message"]
    assert message["token"] == TOKEN
    assert message["notification"] == {"title": "Your order has shipped", "body": "It arrives on Tuesday."}
    assert message["data"] == {"order_id": "o-42", "delivery_id": DELIVERY_ID}
    assert message["android"]["collapse_key"] == DELIVERY_ID
    assert message["apns"]["headers"]["apns-collapse-id"] == DELIVERY_ID
    assert message["webpush"]["notification"]["tag"] == DELIVERY_ID
    assert "validate_only" not in send.json()


async def test_the_access_token_is_reused(fcm: FakeFcm, make_provider: Callable[[], FcmProvider]) -> None:
    provider = make_provider()
    await provider.send(push_message())
    await provider.send(push_message(device_id="device-2"))

    assert len(fcm.sends) == 2
    assert len(fcm.token_requests) == 1


async def test_unregistered_token(fcm: FakeFcm, make_provider: Callable[[], FcmProvider]) -> None:
    fcm.then(fcm_error(404, "NOT_FOUND", "Requested entity was not found.", error_code="UNREGISTERED"))

    with pytest.raises(UnregisteredToken):
        await make_provider().send(push_message())


async def test_invalid_argument_about_the_token_is_an_unregistered_token(
    fcm: FakeFcm, make_provider: Callable[[], FcmProvider]
) -> None:
    fcm.then(
        fcm_error(
            400,
            "INVALID_ARGUMENT",
            f"The registration token is not a valid FCM registration token: {TOKEN}",
            error_code="INVALID_ARGUMENT",
            field="message.token",
        )
    )

    with pytest.raises(UnregisteredToken) as caught:
        await make_provider().send(push_message())

    assert TOKEN not in str(caught.value)
    assert "not a valid FCM registration token" in str(caught.value)


async def test_invalid_argument_about_something_else_is_permanent_but_keeps_the_device(
    fcm: FakeFcm, make_provider: Callable[[], FcmProvider]
) -> None:
    fcm.then(
        fcm_error(
            400,
            "INVALID_ARGUMENT",
            "Invalid data payload key: from",
            error_code="INVALID_ARGUMENT",
            field="message.data",
        )
    )

    with pytest.raises(PermanentFailure) as caught:
        await make_provider().send(push_message())

    assert not isinstance(caught.value, UnregisteredToken)


async def test_rate_limited_is_transient_with_retry_after(
    fcm: FakeFcm, make_provider: Callable[[], FcmProvider]
) -> None:
    quota = fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", error_code="QUOTA_EXCEEDED")
    fcm.then(Reply(quota.status, quota.body, {"Retry-After": "7"}))

    with pytest.raises(TransientFailure) as caught:
        await make_provider().send(push_message())

    assert caught.value.retry_after_s == 7
    assert len(fcm.sends) == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_transient_after_exactly_one_request(
    fcm: FakeFcm, make_provider: Callable[[], FcmProvider], status: int
) -> None:
    """firebase-admin would retry these up to four times by itself; a retry after FCM accepted is a duplicate."""
    fcm.then(*[fcm_error(status, "UNAVAILABLE", "The service is currently unavailable.")] * 5)

    with pytest.raises(TransientFailure):
        await make_provider().send(push_message())

    assert len(fcm.sends) == 1


async def test_a_hanging_fcm_is_transient_within_the_timeout(
    fcm: FakeFcm, make_provider: Callable[[], FcmProvider]
) -> None:
    provider = make_provider()
    await provider.send(push_message())  # the OAuth token is fetched and cached
    fcm.then(Reply(hang=True))
    started = time.monotonic()

    with pytest.raises(TransientFailure) as caught:
        await provider.send(push_message())

    # Whichever fires first — our own deadline or the HTTP client's read timeout — it is a timeout, not a hang.
    assert time.monotonic() - started < TIMEOUT_S + 5
    message = str(caught.value).lower()
    assert "did not answer" in message or "timed out" in message
    assert len(fcm.sends) == 2


async def test_our_credentials_refused_by_fcm_are_transient(
    fcm: FakeFcm, make_provider: Callable[[], FcmProvider]
) -> None:
    """A 401 is the service account's problem, not the device's: retried, never taken for a bad token."""
    fcm.then(*[fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")] * 3)

    with pytest.raises(TransientFailure) as caught:
        await make_provider().send(push_message())

    assert not isinstance(caught.value, PermanentFailure)


async def test_a_token_endpoint_that_refuses_the_key_is_transient(
    fcm: FakeFcm, make_provider: Callable[[], FcmProvider], service_account_key: rsa.RSAPrivateKey
) -> None:
    provider = make_provider()
    fcm.account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()

    with pytest.raises(TransientFailure) as caught:
        await provider.send(push_message())

    assert "token endpoint" in str(caught.value)
    assert fcm.sends == []


async def test_a_token_endpoint_that_is_down_is_transient(
    tmp_path: Path, service_account_key: rsa.RSAPrivateKey
) -> None:
    account = write_service_account(
        tmp_path, key=service_account_key, token_uri=f"http://127.0.0.1:{free_port()}/token"
    )
    provider = FcmProvider(
        credentials_file=account.path, timeout_s=TIMEOUT_S, fcm_url=f"http://127.0.0.1:{free_port()}"
    )
    try:
        with pytest.raises(TransientFailure) as caught:
            await provider.send(push_message())
    finally:
        await provider.close()

    assert "token endpoint unreachable" in str(caught.value)


async def test_fcm_unreachable_is_transient(
    tmp_path: Path, service_account_key: rsa.RSAPrivateKey, http_server: FakeHttpServer
) -> None:
    # OAuth answers (on the shared fake), FCM itself is not there.
    fake = FakeFcm(http_server, service_account_key.public_key())
    account = write_service_account(tmp_path, key=service_account_key, token_uri=fake.token_uri)
    provider = FcmProvider(
        credentials_file=account.path, timeout_s=TIMEOUT_S, fcm_url=f"http://127.0.0.1:{free_port()}"
    )
    try:
        with pytest.raises(TransientFailure):
            await provider.send(push_message())
    finally:
        await provider.close()
