"""RabbitMQ really stops (stop_app) while notifications are accepted: accepts succeed, deliveries wait in
PostgreSQL, and they flow once RabbitMQ is back."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from clarion.core.broker import EMAIL_QUEUE, create_broker
from clarion.notifications import models as m
from clarion.v1 import templates_pb2
from tests.conftest import REQUIRE_SERVICES
from tests.integration.conftest import RABBITMQ_URL, RunningClarion
from tests.integration.notifications.test_dispatcher import (
    TEMPLATE,
    dispatcher_for,
    drain,
    make_user,
    send,
)

pytestmark = pytest.mark.integration


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture
def rabbitmq_control() -> Iterator[None]:
    """rabbitmqctl on this machine; whatever happens, RabbitMQ is running again afterwards."""
    if shutil.which("rabbitmqctl") is None:
        if REQUIRE_SERVICES:
            pytest.fail("rabbitmqctl is needed to stop and start RabbitMQ")
        pytest.skip("rabbitmqctl is not installed")
    yield
    _rabbitmqctl("start_app")
    _rabbitmqctl("await_startup")


async def unpublished(clarion: RunningClarion) -> int:
    async with clarion.resources.sessions() as session:
        query = select(func.count()).select_from(m.DeliveryRow).where(m.DeliveryRow.published_at.is_(None))
        return int((await session.execute(query)).scalar_one())


async def test_accepts_survive_a_broker_outage_and_deliveries_flow_after(
    clarion: RunningClarion, rabbitmq_control: None
) -> None:
    await clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=TEMPLATE), timeout=10)
    user_id = await make_user(clarion, email_address="outage@example.com")
    broker = create_broker(RABBITMQ_URL, namespace=f"test-{uuid.uuid4().hex[:8]}", publish_timeout_s=1)
    await broker.connect()
    dispatcher = dispatcher_for(clarion, broker)
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.to_thread(_rabbitmqctl, "stop_app")
        ids = [await send(clarion, user_id, channels=[1]) for _ in range(5)]
        assert len(set(ids)) == 5, "every request is accepted while RabbitMQ is down"
        deadline = time.monotonic() + 30
        while await unpublished(clarion) < 5:  # planned into deliveries, but not published
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)

        await asyncio.to_thread(_rabbitmqctl, "start_app")
        deadline = time.monotonic() + 90
        while await unpublished(clarion):
            assert time.monotonic() < deadline, "deliveries did not flow after RabbitMQ came back"
            await asyncio.sleep(0.5)
        messages = await drain(broker, EMAIL_QUEUE, expect=5, timeout_s=30)
        assert sorted(msg["notification_id"] for msg in messages) == sorted(ids)
    finally:
        stop.set()
        await running
        delete = getattr(broker, "delete_topology", None)
        if delete is not None:
            await delete()
        await broker.close()
