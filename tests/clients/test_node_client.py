"""The Node client (tests/clients/node: @grpc/grpc-js and @grpc/proto-loader on protos/, and fetch) against the real
services: a user, a template and a notification over gRPC directly, over gRPC through Envoy and over REST through
Envoy, each with an API key, and each turned away without one."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from clarion.keys.scopes import Scope
from clarion.v1 import notifications_pb2
from tests.conftest import unavailable
from tests.integration.conftest import RunningClarion
from tests.integration.gateway.conftest import RunningGateway

pytestmark = pytest.mark.integration

CLIENT_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture
def node(googleapis_protos: Path) -> str:
    """The node binary, with the client's packages installed from the lockfile (`make node-client`)."""
    binary = shutil.which("node")
    if binary is None:
        unavailable("Node.js", "no `node` on PATH")
    if not (CLIENT_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        unavailable("the Node client's packages", "run `make node-client` (npm ci in tests/clients/node)")
    assert binary is not None
    return binary


async def run_client(node: str, grpc_address: str, envoy_address: str, api_key: str) -> list[dict[str, Any]]:
    """Run client.mjs without blocking the event loop the services run on; its JSON lines."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    process = await asyncio.create_subprocess_exec(
        node,
        "client.mjs",
        grpc_address,
        envoy_address,
        cwd=CLIENT_DIR,
        env={**environment, "CLARION_API_KEY": api_key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stdout.decode().splitlines()]


async def test_the_node_client_over_grpc_direct_grpc_through_envoy_and_rest(
    node: str, clarion: RunningClarion, gateway: RunningGateway
) -> None:
    # Least privilege: send and manage, not admin.
    api_key = await clarion.make_key(Scope.SEND, Scope.MANAGE, name="node-client")
    records = await run_client(node, clarion.address, gateway.address, api_key)

    sent = {r["via"]: r for r in records if "notification_id" in r}
    refused = {r["via"]: r for r in records if "without_key" in r}
    assert set(sent) == set(refused) == {"grpc-direct", "grpc-envoy", "rest-envoy"}
    assert refused["grpc-direct"]["without_key"] == refused["grpc-envoy"]["without_key"] == "UNAUTHENTICATED"
    assert (refused["rest-envoy"]["without_key"], refused["rest-envoy"]["reason"]) == (401, "API_KEY_MISSING")
    assert sent["rest-envoy"]["replayed"] is True
    assert sent["rest-envoy"]["replayed_id"] == sent["rest-envoy"]["notification_id"]

    for via, record in sent.items():
        assert record["status"] == "NOTIFICATION_STATUS_ACCEPTED", via
        stored = await clarion.notifications.GetNotification(
            notifications_pb2.GetNotificationRequest(notification_id=record["notification_id"]), timeout=10
        )
        assert (stored.user_id, stored.template_key) == (record["user_id"], record["template_key"]), via
        # The values arrived as sent (a Value that lost its kind would be a null, refused by the server).
        assert "Ada" in dict(stored.message_data).values() or dict(stored.message_data)["app_name"] == "MyApp", via
