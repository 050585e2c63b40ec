"""Envoy, the real one, in front of the real services: a REST client of it and its gRPC address."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from clarion.core.config import load_settings
from clarion.gateway.local import local_gateway
from clarion.gateway.process import EnvoyProcess
from tests.conftest import free_port
from tests.integration.conftest import RunningClarion


@dataclass
class Response:
    """What a REST call got back."""

    status: int
    headers: Message
    body: bytes
    content_type: str = field(init=False)

    def __post_init__(self) -> None:
        self.content_type = self.headers.get("content-type", "")

    def json(self) -> Any:
        """The body as JSON; fails the test, showing the body, if it is not JSON."""
        assert self.content_type.startswith("application/json"), (self.status, self.content_type, self.body[:500])
        return json.loads(self.body)


class RestClient:
    """A minimal HTTP/1.1 client (the standard library's), run in a thread: the services under test share this
    test's event loop, so a blocking call on it would wait for a server that cannot run."""

    def __init__(self, host: str, port: int, *, api_key: str | None = None) -> None:
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"
        # Sent as `authorization: Bearer <key>` unless a request sets its own authorization header.
        self.api_key = api_key

    def with_key(self, api_key: str | None) -> RestClient:
        """The same gateway, calling with another key (None: with no authorization header at all)."""
        return RestClient(self.host, self.port, api_key=api_key)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request on a new connection; any status is a Response, not an exception."""
        all_headers = dict(headers or {})
        if self.api_key is not None:
            all_headers.setdefault("authorization", f"Bearer {self.api_key}")
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("content-type", "application/json")
        return await asyncio.to_thread(self._send, method, path, body, all_headers)

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Response:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=15)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            connection.close()

    async def get(self, path: str, **kwargs: Any) -> Response:
        """GET `path`."""
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, json_body: Any = None, **kwargs: Any) -> Response:
        """POST `json_body` as JSON to `path`."""
        return await self.request("POST", path, json_body=json_body, **kwargs)

    async def patch(self, path: str, json_body: Any = None, **kwargs: Any) -> Response:
        """PATCH `path` with `json_body` as JSON."""
        return await self.request("PATCH", path, json_body=json_body, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Response:
        """DELETE `path`."""
        return await self.request("DELETE", path, **kwargs)


@dataclass
class RunningGateway:
    """Envoy in front of a gRPC server: REST at `rest` (sending `api_key`), native gRPC at `address`."""

    rest: RestClient
    address: str
    envoy: EnvoyProcess
    config_path: Path
    api_key: str | None = None


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningGateway]]]:
    """Factory: `await start_gateway(grpc_port, api_key=...)` starts Envoy as `clarion up` does (config rendered into
    a data dir) on a free port in front of the gRPC server on `grpc_port`; every Envoy is stopped afterwards."""
    stack = contextlib.AsyncExitStack()

    async def start(grpc_port: int, *, api_key: str | None = None) -> RunningGateway:
        http_port = free_port()
        settings = load_settings(http_port=http_port, data_dir=tmp_path / f"state-{http_port}")
        envoy = await stack.enter_async_context(local_gateway(settings, grpc_port=grpc_port))
        address = f"127.0.0.1:{http_port}"
        rest = RestClient("127.0.0.1", http_port, api_key=api_key)
        return RunningGateway(rest, address, envoy, settings.data_dir / "envoy.yaml", api_key)

    yield start
    await stack.aclose()


@pytest.fixture
async def gateway(clarion: RunningClarion, start_gateway: Callable[..., Awaitable[RunningGateway]]) -> RunningGateway:
    """Envoy in front of the real services (one gRPC server over a migrated database); REST calls carry the
    instance's admin key."""
    return await start_gateway(int(clarion.address.rsplit(":", 1)[1]), api_key=clarion.api_key)


@pytest.fixture
def rest(gateway: RunningGateway) -> RestClient:
    """The REST client of the running gateway."""
    return gateway.rest
