"""grpcurl, which knows the API only by reflection, against the real services: a user, a template and a
notification with an API key (`-H 'authorization: Bearer …'`), directly and through Envoy; refused without one."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from clarion.keys.scopes import Scope
from tests.integration.conftest import RunningClarion
from tests.integration.gateway.conftest import RunningGateway

pytestmark = pytest.mark.integration

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


async def grpcurl(address: str, method: str, body: dict[str, Any], *, api_key: str | None) -> tuple[int, str, str]:
    """One call by reflection with the real grpcurl, off the event loop the services run on."""
    headers = ["-H", f"authorization: Bearer {api_key}"] if api_key else []
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        "-max-time",
        "20",
        *headers,
        "-d",
        json.dumps(body),
        address,
        method,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def call(address: str, method: str, body: dict[str, Any], api_key: str) -> Any:
    code, stdout, stderr = await grpcurl(address, method, body, api_key=api_key)
    assert code == 0, stderr
    return json.loads(stdout)


@pytest.mark.parametrize("via", ["direct", "envoy"])
async def test_grpcurl_creates_a_user_and_a_template_and_sends(
    clarion: RunningClarion, gateway: RunningGateway, via: str
) -> None:
    address = clarion.address if via == "direct" else gateway.address
    api_key = await clarion.make_key(Scope.SEND, Scope.MANAGE, name="grpcurl")

    user = await call(
        address, "clarion.v1.UserService/CreateUser", {"user": {"email_address": f"{via}@example.com"}}, api_key
    )
    template = await call(
        address,
        "clarion.v1.TemplateService/CreateTemplate",
        {"template": {"template_key": f"CURL_{via}", "subject": "Hi {name}", "body": "Hello {name}"}},
        api_key,
    )
    sent = await call(
        address,
        "clarion.v1.NotificationService/SendNotification",
        {"user_id": user["userId"], "template_key": template["templateKey"], "message_data": {"name": "Ada"}},
        api_key,
    )
    assert sent["notification"]["status"] == "NOTIFICATION_STATUS_ACCEPTED"
    assert sent["notification"]["userId"] == user["userId"]

    code, _, stderr = await grpcurl(
        address, "clarion.v1.UserService/GetUser", {"user_id": user["userId"]}, api_key=None
    )
    assert code != 0
    assert "Code: Unauthenticated" in stderr
