"""Helpers for the API key tests: channels that send a chosen key (or none), and one cheap RPC per service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from clarion.keys.auth import bearer_auth
from clarion.v1 import (
    notifications_pb2,
    notifications_pb2_grpc,
    templates_pb2,
    templates_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)

SERVICES = ("users", "templates", "notifications")


@contextlib.asynccontextmanager
async def channel_with(address: str, api_key: str | None) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to `address` sending `api_key` on every call (None: no authorization header)."""
    interceptors = bearer_auth(api_key) if api_key is not None else []
    async with grpc.aio.insecure_channel(address, interceptors=interceptors) as channel:
        yield channel


def one_rpc(channel: grpc.aio.Channel, service: str) -> Any:
    """A read-only call to `service` that succeeds on an empty database when the caller may make it."""
    if service == "users":
        return users_pb2_grpc.UserServiceStub(channel).ListUsers(users_pb2.ListUsersRequest(), timeout=10)
    if service == "templates":
        return templates_pb2_grpc.TemplateServiceStub(channel).ListTemplates(
            templates_pb2.ListTemplatesRequest(), timeout=10
        )
    return notifications_pb2_grpc.NotificationServiceStub(channel).ListNotifications(
        notifications_pb2.ListNotificationsRequest(), timeout=10
    )


# The gateway fixtures (Envoy in front of the `clarion` instance), for the REST side of the key tests.
from tests.integration.gateway.conftest import gateway, rest, start_gateway  # noqa: E402, F401 - pytest finds fixtures by name
