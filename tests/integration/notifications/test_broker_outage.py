"""RabbitMQ really stops (stop_app) while notifications are accepted: accepts succeed, deliveries wait in
PostgreSQL, and they flow once RabbitMQ is back. The node stopped is one of this test's own (the chaos suite's
tests/chaos/infra.py), never the machine's: the other tests running beside this one keep their broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from clarion.core.broker import create_broker
from clarion.delivery.queues import EMAIL_QUEUE, TOPOLOGY
from clarion.notifications import models as m
from clarion.v1 import templates_pb2
from tests.chaos.infra import ChaosRabbitMQ
from tests.integration.conftest import RunningClarion
from tests.integration.notifications.test_dispatcher import (
    TEMPLATE,
    dispatcher_for,
    drain,
    make_user,
    send,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def own_rabbitmq() -> Iterator[ChaosRabbitMQ]:
    """A RabbitMQ node of this test's own, removed afterwards."""
    node = ChaosRabbitMQ()
    try:
        node.start()
        yield node
    finally:
        node.remove()


async def unpublished(clarion: RunningClarion) -> int:
    async with clarion.resources.sessions() as session:
        query = select(func.count()).select_from(m.DeliveryRow).where(m.DeliveryRow.published_at.is_(None))
        return int((await session.execute(query)).scalar_one())


async def test_accepts_survive_a_broker_outage_and_deliveries_flow_after(
    clarion: RunningClarion, own_rabbitmq: ChaosRabbitMQ
) -> None:
    await clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=TEMPLATE), timeout=10)
    user_id = await make_user(clarion, email_address="outage@example.com")
    broker = create_broker(
        own_rabbitmq.url, topology=TOPOLOGY, namespace=f"test-{uuid.uuid4().hex[:8]}", publish_timeout_s=1
    )
    await broker.connect()
    dispatcher = dispatcher_for(clarion, broker)
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.to_thread(own_rabbitmq.stop_app)
        ids = [await send(clarion, user_id, channels=[1]) for _ in range(5)]
        assert len(set(ids)) == 5, "every request is accepted while RabbitMQ is down"
        deadline = time.monotonic() + 30
        while await unpublished(clarion) < 5:  # planned into deliveries, but not published
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)

        await asyncio.to_thread(own_rabbitmq.start_app)
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
