"""The seed system's three requests through the real Envoy, unchanged but for host and API key, and the email that
comes out of them: outside quiet hours it goes at once; inside 22:00-08:00 it waits, unless CRITICAL."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clarion.core.broker import Broker, create_broker
from clarion.core.config import load_settings
from clarion.delivery.consumer import DeliveryWorker
from clarion.delivery.providers.factory import create_email_provider
from clarion.delivery.queues import TOPOLOGY
from tests.integration.conftest import RunningClarion
from tests.integration.gateway.conftest import RestClient
from tests.integration.gateway.test_rest_templates import SEED_TEMPLATE
from tests.integration.gateway.test_rest_users import SEED_USER
from tests.integration.notifications.test_dispatcher import Clock, dispatcher_for

pytestmark = pytest.mark.integration

SEED_DATA = {"app_name": "MyApp", "new_updates": "10", "digest_link": "https://example.com/digest"}


async def _send(rest: RestClient, body: dict[str, Any], key: str) -> dict[str, Any]:
    response = await rest.post("/v1/notifications", body, headers={"X-Idempotency-Key": key})
    assert response.status == 200, response.body
    sent: dict[str, Any] = response.json()
    return sent


async def _deliver(clarion: RunningClarion, broker: Broker, clock: Clock, outbox: Path) -> None:
    """One dispatcher pass at the clock's time, then let the email worker drain the queue into the outbox."""
    provider = create_email_provider(load_settings(email_provider="file", outbox_dir=outbox))
    worker = DeliveryWorker(channel="email", fast=clarion.resources.fast, provider=provider)
    await worker.start(broker, "email.queue", prefetch=4)
    try:
        await dispatcher_for(clarion, broker, clock).run_once()
    finally:
        await broker.stop_consuming(timeout_s=10)
        await provider.close()


def _read(outbox: Path) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(outbox.glob("*.eml"))
    ]


async def test_the_seed_requests_deliver_a_correct_email_and_respect_quiet_hours(
    rest: RestClient, clarion: RunningClarion, tmp_path: Path
) -> None:
    user = (await rest.post("/v1/users", SEED_USER)).json()
    assert (await rest.post("/v1/templates", SEED_TEMPLATE)).status == 200
    body = {"user_id": user["user_id"], "template_key": "WEEKLY_DIGEST", "message_data": SEED_DATA}

    first = await _send(rest, body, "unique-key-123")
    again = await _send(rest, body, "unique-key-123")
    assert first["replayed"] is False
    assert again["replayed"] is True
    assert again["notification"]["notification_id"] == first["notification"]["notification_id"]
    assert first["notification"]["status"] == "NOTIFICATION_STATUS_ACCEPTED"

    broker = create_broker(None, topology=TOPOLOGY)
    await broker.connect()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    outbox = tmp_path / "outbox"

    # Noon UTC, outside the user's 22:00-08:00 window: the email goes out now.
    await _deliver(clarion, broker, Clock(tomorrow.replace(hour=12)), outbox)
    [message] = _read(outbox)
    assert message["To"] == "user@example.com"
    assert message["Subject"] == "Your Weekly MyApp Digest: 10 new items!"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    assert text.get_content().strip() == "Check out your latest activity. See summary: https://example.com/digest"
    assert html.get_content().strip() == (
        '<h3>Weekly Summary</h3><p>You have 10 new items. <a href="https://example.com/digest">View Digest</a></p>'
    )
    shown = (await rest.get(f"/v1/notifications/{first['notification']['notification_id']}")).json()
    assert shown["status"] == "NOTIFICATION_STATUS_SENT"

    # 23:00 UTC, inside the window: a normal notification waits for 08:00, a CRITICAL one does not.
    held = await _send(rest, {**body, "message_data": {**SEED_DATA, "new_updates": "11"}}, "unique-key-124")
    urgent = await _send(rest, {**body, "priority": "PRIORITY_CRITICAL"}, "unique-key-125")
    night = Clock(tomorrow.replace(hour=23))
    await _deliver(clarion, broker, night, outbox)
    assert len(_read(outbox)) == 2
    held_now = (await rest.get(f"/v1/notifications/{held['notification']['notification_id']}")).json()
    [delivery] = held_now["deliveries"]
    assert (delivery["status"], delivery["status_reason"]) == ("DELIVERY_STATUS_QUEUED", "quiet_hours")
    urgent_now = (await rest.get(f"/v1/notifications/{urgent['notification']['notification_id']}")).json()
    assert urgent_now["status"] == "NOTIFICATION_STATUS_SENT"

    night.now = night.now.replace(hour=8) + timedelta(days=1)
    await _deliver(clarion, broker, night, outbox)
    subjects = sorted(str(m["Subject"]) for m in _read(outbox))
    assert "Your Weekly MyApp Digest: 11 new items!" in subjects
    await broker.close()

    # The remaining notification RPCs over REST: list, cancel, dead letters.
    listed = (await rest.get(f"/v1/notifications?user_id={user['user_id']}&status=NOTIFICATION_STATUS_SENT")).json()
    assert len(listed["notifications"]) == 3
    cancel = await rest.post(f"/v1/notifications/{first['notification']['notification_id']}:cancel", {})
    assert cancel.status == 400, "already sent: FAILED_PRECONDITION"
    assert (await rest.get("/v1/dead-letters?channel=CHANNEL_EMAIL")).json() == {
        "dead_letters": [],
        "next_page_token": "",
    }
    refused = await rest.post("/v1/dead-letters:replay", {})
    assert refused.status == 400
    assert refused.json()["details"][1]["field_violations"][0]["field"] == "delivery_ids"
