"""SimulatedPushProvider: push without FCM credentials, as the seed did."""

from __future__ import annotations

import io
import socket
from typing import Any

import pytest

from clarion.delivery.providers.base import PushMessage
from clarion.delivery.providers.simulated import SimulatedPushProvider

pytestmark = pytest.mark.integration

TOKEN = "simulated-device-token-never-logged"


def no_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the simulated provider touched the network")


async def test_returns_an_id_logs_without_the_token_and_never_touches_the_network(
    monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    provider = SimulatedPushProvider()
    message = PushMessage("d-1", "device-1", TOKEN, "ios", "Title", "Body", {"k": "v"})

    message_id = await provider.send(message)
    await provider.close()

    assert message_id == "simulated-d-1"
    assert provider.simulated
    assert provider.name == "simulated"
    output = log_output.getvalue()
    assert "push_simulated" in output
    assert "device-1" in output
    assert TOKEN not in output
