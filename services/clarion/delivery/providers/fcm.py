"""Push through Firebase Cloud Messaging (HTTP v1) with `firebase-admin`.

firebase-admin retries HTTP 500 and 503 by itself, up to four times. A retry after FCM accepted is a duplicate
push, and retries inside one attempt hide from the attempt log and the circuit breaker, so this module removes
them and the worker owns the retry budget. That takes two internals of firebase-admin, which is why the
dependency is pinned to the release line they were checked against (firebase-admin>=7.7,<7.8):

- `messaging._get_messaging_service(app)` returns the app's `_MessagingService`, whose `_client.session` is the
  `requests` session every send goes through: its retrying adapters are replaced by non-retrying ones;
- `_MessagingService._fcm_url` is the send URL, set per instance (not the class attribute `FCM_URL`, which would
  change every app in the process) when `CLARION_FCM_URL` points elsewhere.

`_take_over_transport` refuses to start if either has moved, and the tests prove a 503 costs exactly one request.
OAuth token requests go to the service-account file's `token_uri`; google-auth may retry those, which is harmless
(nothing is delivered by fetching a token).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import firebase_admin  # type: ignore[import-untyped]
import google.auth.exceptions
import requests
from firebase_admin import credentials, messaging
from firebase_admin import exceptions as firebase_errors

from clarion.delivery.providers.base import (
    OutcomeUnknown,
    PermanentFailure,
    ProviderError,
    PushMessage,
    TransientFailure,
    UnregisteredToken,
    check_delivery_id,
    parse_retry_after,
    redact_error,
)
from clarion.delivery.providers.blocking import MAX_THREADS, BlockingCalls

# 401/403: FCM refuses our service account or project (or the APNs key uploaded to it). The push is fine; the
# setup is not, so it is retried rather than failed for good — and never taken for a bad token, since a
# misconfigured project would otherwise delete every device.
_OUR_CREDENTIALS = frozenset({401, 403})
_RETRYABLE = frozenset({408, 429})


class FcmProvider:
    """Sends each push as one FCM v1 `messages:send` request, with no retries of its own."""

    name = "fcm"
    simulated = False

    def __init__(self, *, credentials_file: Path, timeout_s: float, fcm_url: str | None = None) -> None:
        # Raises ValueError/OSError for a missing or malformed file; the factory names the setting.
        certificate = credentials.Certificate(str(credentials_file))
        self._timeout_s = timeout_s
        # A named app of our own, so nothing else in the process (or a second provider) shares its state.
        self._app = firebase_admin.initialize_app(
            certificate, options={"httpTimeout": timeout_s}, name=f"clarion-fcm-{uuid.uuid4().hex}"
        )
        self._service = _take_over_transport(self._app, fcm_url)
        self._calls = BlockingCalls(name=self.name)

    async def send(self, message: PushMessage) -> str:
        """Send to one device; return FCM's message name (projects/<p>/messages/<id>)."""
        fcm_message = _build(message)
        secrets = (message.token,)
        try:
            name = await self._calls.run(lambda: messaging.send(fcm_message, app=self._app), timeout_s=self._timeout_s)
        except TimeoutError:
            raise OutcomeUnknown(f"fcm did not answer within {self._timeout_s:g}s") from None
        except firebase_errors.FirebaseError as exc:
            raise _failure(exc, secrets) from None
        except google.auth.exceptions.TransportError as exc:
            text = redact_error(f"fcm token endpoint unreachable: {exc}", secrets=secrets)
            raise TransientFailure(text) from None
        except google.auth.exceptions.GoogleAuthError as exc:
            # Our service account refused (revoked key, clock skew): retried, so fixing the setup delivers it.
            text = redact_error(f"fcm credentials not accepted by the token endpoint: {exc}", secrets=secrets)
            raise TransientFailure(text) from None
        except ValueError as exc:  # firebase-admin refuses to encode the message (a bad data key, say)
            raise PermanentFailure(redact_error(f"fcm message refused: {exc}", secrets=secrets)) from None
        except Exception as exc:  # the contract: nothing but a ProviderError leaves a provider
            text = redact_error(f"fcm failed: {type(exc).__name__}: {exc}", secrets=secrets)
            raise TransientFailure(text) from exc
        return str(name)

    async def close(self) -> None:
        """Delete the app and close its HTTP sessions."""
        self._calls.close()
        # delete_app closes the service's httpx client with asyncio.run(), which cannot run inside this loop.
        await asyncio.to_thread(_shut_down, self._app, self._service)


def _build(message: PushMessage) -> Any:
    """The FCM message: notification + data, and the delivery id as data, Android collapse key, APNs collapse id
    and web push tag. All three platform blocks are always set: each applies only on its platform, so a wrong or
    missing `platform` cannot lose the collapse key."""
    delivery_id = check_delivery_id(message.delivery_id)
    fcm_message = messaging.Message(
        notification=messaging.Notification(title=message.title or None, body=message.body or None),
        data={**message.data, "delivery_id": delivery_id},
        android=messaging.AndroidConfig(collapse_key=delivery_id),
        apns=messaging.APNSConfig(headers={"apns-collapse-id": delivery_id}),
        webpush=messaging.WebpushConfig(notification=messaging.WebpushNotification(tag=delivery_id)),
    )
    # Devices register FCM registration tokens with Clarion, which FCM v1 takes as `message.token`. firebase-admin
    # 7.7 deprecates the `token=` argument in favour of Firebase installation ids (`fid`), which our clients do
    # not send; setting the attribute after construction sends the same JSON without a warning on every push.
    fcm_message.token = message.token
    return fcm_message


def _take_over_transport(app: Any, fcm_url: str | None) -> Any:
    """Remove firebase-admin's own retries and, when asked, aim it at another FCM URL (see the module docstring)."""
    service = messaging._get_messaging_service(app)
    session = getattr(getattr(service, "_client", None), "session", None)
    if not isinstance(session, requests.Session) or not isinstance(getattr(service, "_fcm_url", None), str):
        raise RuntimeError(
            f"firebase-admin {firebase_admin.__version__} no longer has the internals Clarion relies on to disable "
            "its retries; Clarion is tested with 7.7.x"
        )
    for prefix in list(session.adapters):
        # max_retries=0: one request per send, whatever the status or socket error.
        session.mount(prefix, requests.adapters.HTTPAdapter(max_retries=0, pool_maxsize=MAX_THREADS))
    if fcm_url:
        service._fcm_url = f"{fcm_url.rstrip('/')}/v1/projects/{quote(app.project_id, safe='')}/messages:send"
    return service


def _failure(error: Any, secrets: tuple[str, ...]) -> ProviderError:
    """A FirebaseError as a typed failure. `http_response` is None when no answer came (timeout, refused)."""
    response: requests.Response | None = error.http_response
    status = response.status_code if response is not None else None
    text = redact_error(f"fcm {status or error.code}: {error}", secrets=secrets)
    if isinstance(error, messaging.UnregisteredError) or (status == 400 and _about_the_token(response)):
        return UnregisteredToken(text)
    if status is None or status in _RETRYABLE or status >= 500 or status in _OUR_CREDENTIALS:
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        return TransientFailure(text, retry_after_s=retry_after)
    return PermanentFailure(text)


def _about_the_token(response: requests.Response | None) -> bool:
    """Whether a 400 INVALID_ARGUMENT blames the registration token (a field violation on `message.token`)."""
    if response is None:
        return False
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    if not isinstance(error, dict) or error.get("status") != "INVALID_ARGUMENT":
        return False
    for detail in error.get("details") or []:
        for violation in (detail.get("fieldViolations") or []) if isinstance(detail, dict) else []:
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return "registration token" in str(error.get("message", "")).lower()


def _shut_down(app: Any, service: Any) -> None:
    firebase_admin.delete_app(app)
    service._client.close()
