"""The sync and async clients: a channel with the API key, a default deadline, a retry policy and errors as
exceptions, and the generated stubs on it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple, Self

import grpc
import grpc.aio
from google.protobuf import struct_pb2, timestamp_pb2

from clarion.v1 import (
    access_pb2_grpc,
    common_pb2,
    inbox_pb2_grpc,
    notifications_pb2,
    notifications_pb2_grpc,
    suppressions_pb2_grpc,
    templates_pb2_grpc,
    users_pb2_grpc,
)
from clarion_client._errors import ClarionError

SERVICES = (
    "clarion.v1.UserService",
    "clarion.v1.TemplateService",
    "clarion.v1.NotificationService",
    "clarion.v1.AccessService",
    "clarion.v1.InboxService",
    "clarion.v1.SuppressionService",
)


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's own retries (the channel's service config), for every Clarion method.

    Only UNAVAILABLE is retried by default: Clarion answers it when the call did not reach the server or the server
    could not reach its database, and answers every other failure the same way however often it is asked.
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0
    retryable_codes: tuple[grpc.StatusCode, ...] = (grpc.StatusCode.UNAVAILABLE,)

    def service_config(self) -> str:
        """The `grpc.service_config` channel option (gRPC's JSON service config)."""
        policy = {
            "maxAttempts": self.max_attempts,
            "initialBackoff": f"{self.initial_backoff_s}s",
            "maxBackoff": f"{self.max_backoff_s}s",
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": [code.name for code in self.retryable_codes],
        }
        return json.dumps({"methodConfig": [{"name": [{"service": s} for s in SERVICES], "retryPolicy": policy}]})


DEFAULT_RETRY = RetryPolicy()


def channel_options(retry: RetryPolicy | None, extra: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [("grpc.enable_retries", 0 if retry is None else 1)]
    if retry is not None:
        options.append(("grpc.service_config", retry.service_config()))
    return options + list(extra)


def with_key(metadata: Iterable[tuple[str, str | bytes]] | None, api_key: str | None) -> list[tuple[str, str | bytes]]:
    """The call's metadata plus the API key, unless the call brings its own `authorization`."""
    entries = list(metadata or ())
    if api_key is not None and not any(name == "authorization" for name, _ in entries):
        entries.append(("authorization", f"Bearer {api_key}"))
    return entries


def notification_request(
    user_id: str,
    template_key: str,
    data: Mapping[str, Any] | None,
    *,
    channels: Iterable[common_pb2.Channel.ValueType],
    priority: notifications_pb2.Priority.ValueType,
    send_at: datetime | None,
    locale: str,
    template_version: int,
    idempotency_key: str | None,
) -> notifications_pb2.SendNotificationRequest:
    """A SendNotificationRequest, always with an idempotency key: a new UUID unless the caller gives one, so that
    gRPC's retry of a send that did arrive is answered with the original notification instead of a second one."""
    message_data = struct_pb2.Struct()
    message_data.update(dict(data or {}))
    request = notifications_pb2.SendNotificationRequest(
        user_id=user_id,
        template_key=template_key,
        message_data=message_data,
        channels=list(channels),
        priority=priority,
        locale=locale,
        template_version=template_version,
        request_id=idempotency_key if idempotency_key is not None else str(uuid.uuid4()),
    )
    if send_at is not None:
        timestamp = timestamp_pb2.Timestamp()
        timestamp.FromDatetime(send_at)
        request.send_at.CopyFrom(timestamp)
    return request


class _CallDetails(NamedTuple):
    """grpc.ClientCallDetails for the sync API, which gives only the abstract class."""

    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _SyncInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, api_key: str | None, timeout_s: float) -> None:
        self._api_key = api_key
        self._timeout_s = timeout_s

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout if details.timeout is not None else self._timeout_s,
            with_key(details.metadata, self._api_key),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        outcome = continuation(self._details(details), request)
        error = outcome.exception()
        if error is not None:
            raise ClarionError.from_rpc_error(error) from None
        return outcome

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        # The key, and no default deadline: a stream (WatchInbox) lives as long as its reader wants.
        keyed = _CallDetails(
            details.method,
            details.timeout,
            with_key(details.metadata, self._api_key),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )
        return continuation(keyed, request)


class _AsyncInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, api_key: str | None, timeout_s: float) -> None:
        self._api_key = api_key
        self._timeout_s = timeout_s

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        call = await continuation(
            grpc.aio.ClientCallDetails(
                details.method,
                details.timeout if details.timeout is not None else self._timeout_s,
                grpc.aio.Metadata(*with_key(details.metadata, self._api_key)),
                details.credentials,
                details.wait_for_ready,
            ),
            request,
        )
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            raise ClarionError.from_rpc_error(error) from None


class _AsyncStreamInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    """The key on server-streaming calls (WatchInbox), with no default deadline. A class of its own: a grpc.aio
    channel files each interceptor under the first kind it is an instance of."""

    def __init__(self, api_key: str | None) -> None:
        self._api_key = api_key

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        keyed = grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*with_key(details.metadata, self._api_key)),
            details.credentials,
            details.wait_for_ready,
        )
        return await continuation(keyed, request)


class Client:
    """Clarion over gRPC, blocking. `target` is host:port of the gRPC server or of Envoy's HTTP port.

    `credentials` (e.g. `grpc.ssl_channel_credentials()`) makes a TLS channel; without, the channel is plaintext,
    as inside a cluster or to `clarion up`.
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        settings = channel_options(retry, options)
        raw = (
            grpc.insecure_channel(target, settings)
            if credentials is None
            else grpc.secure_channel(target, credentials, settings)
        )
        self._raw = raw
        channel = grpc.intercept_channel(raw, _SyncInterceptor(api_key, timeout_s))
        self.users = users_pb2_grpc.UserServiceStub(channel)
        self.templates = templates_pb2_grpc.TemplateServiceStub(channel)
        self.notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
        self.access = access_pb2_grpc.AccessServiceStub(channel)
        self.inbox = inbox_pb2_grpc.InboxServiceStub(channel)
        self.suppressions = suppressions_pb2_grpc.SuppressionServiceStub(channel)

    def send_notification(
        self,
        user_id: str,
        template_key: str,
        data: Mapping[str, Any] | None = None,
        *,
        channels: Iterable[common_pb2.Channel.ValueType] = (),
        priority: notifications_pb2.Priority.ValueType = notifications_pb2.PRIORITY_UNSPECIFIED,
        send_at: datetime | None = None,
        locale: str = "",
        template_version: int = 0,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
    ) -> notifications_pb2.SendNotificationResponse:
        """Send one notification; `data` fills the template's placeholders (JSON values)."""
        request = notification_request(
            user_id,
            template_key,
            data,
            channels=channels,
            priority=priority,
            send_at=send_at,
            locale=locale,
            template_version=template_version,
            idempotency_key=idempotency_key,
        )
        return self.notifications.SendNotification(request, timeout=timeout_s)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient:
    """Clarion over gRPC on asyncio (`grpc.aio`): as `Client`, with every call awaited."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        settings = channel_options(retry, options)
        interceptors: list[grpc.aio.ClientInterceptor] = [
            _AsyncInterceptor(api_key, timeout_s),
            _AsyncStreamInterceptor(api_key),
        ]
        self._channel = (
            grpc.aio.insecure_channel(target, settings, interceptors=interceptors)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials, settings, interceptors=interceptors)
        )
        self.users = users_pb2_grpc.UserServiceStub(self._channel)  # typed as the AsyncStub by the stubs
        self.templates = templates_pb2_grpc.TemplateServiceStub(self._channel)
        self.notifications = notifications_pb2_grpc.NotificationServiceStub(self._channel)
        self.access = access_pb2_grpc.AccessServiceStub(self._channel)
        self.inbox = inbox_pb2_grpc.InboxServiceStub(self._channel)
        self.suppressions = suppressions_pb2_grpc.SuppressionServiceStub(self._channel)

    async def send_notification(
        self,
        user_id: str,
        template_key: str,
        data: Mapping[str, Any] | None = None,
        *,
        channels: Iterable[common_pb2.Channel.ValueType] = (),
        priority: notifications_pb2.Priority.ValueType = notifications_pb2.PRIORITY_UNSPECIFIED,
        send_at: datetime | None = None,
        locale: str = "",
        template_version: int = 0,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
    ) -> notifications_pb2.SendNotificationResponse:
        """As `Client.send_notification`."""
        request = notification_request(
            user_id,
            template_key,
            data,
            channels=channels,
            priority=priority,
            send_at=send_at,
            locale=locale,
            template_version=template_version,
            idempotency_key=idempotency_key,
        )
        return await self.notifications.SendNotification(request, timeout=timeout_s)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()
