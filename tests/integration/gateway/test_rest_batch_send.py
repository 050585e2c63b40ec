"""BatchSendNotifications over REST through the real Envoy: `POST /v1/notifications:batchSend` answers each item
with its response or its error, and replays by each request_id."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tests.integration.conftest import RunningClarion
from tests.integration.gateway.conftest import RestClient
from tests.integration.notifications.test_send_notification import SEED_DATA, seed

pytestmark = pytest.mark.integration


async def test_rest_batch_send_through_envoy(rest: RestClient, clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    body: dict[str, Any] = {
        "requests": [
            {"user_id": user_id, "template_key": "WEEKLY_DIGEST", "message_data": SEED_DATA, "request_id": "r-1"},
            {"user_id": "no user!", "template_key": "WEEKLY_DIGEST", "message_data": SEED_DATA},
        ]
    }
    response = await rest.post("/v1/notifications:batchSend", body)
    assert response.status == 200, response.body
    ok, bad = response.json()["results"]
    assert ok["response"]["notification"]["request_id"] == "r-1"
    assert ok["response"]["notification"]["status"] == "NOTIFICATION_STATUS_ACCEPTED"
    assert bad["error"]["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    again = await rest.post("/v1/notifications:batchSend", body)
    assert again.json()["results"][0]["response"]["replayed"] is True
