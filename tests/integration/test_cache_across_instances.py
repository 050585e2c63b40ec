"""Two server instances sharing Redis: a read after a write never returns stale data, whichever instance serves it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from clarion.core.cache import RedisCache
from clarion.v1 import templates_pb2, users_pb2
from tests.integration.conftest import RunningClarion

pytestmark = pytest.mark.integration


async def test_user_writes_on_one_instance_are_seen_by_the_other(
    start_clarion: Callable[..., Any], redis_cache_factory: Callable[[], RedisCache]
) -> None:
    a: RunningClarion = await start_clarion(cache=redis_cache_factory())
    b: RunningClarion = await start_clarion(cache=redis_cache_factory())
    user = await a.users.CreateUser(users_pb2.CreateUserRequest(user={"display_name": "v1"}), timeout=10)
    get = users_pb2.GetUserRequest(user_id=user.user_id)
    # Both instances now hold the user in the shared cache.
    assert (await a.users.GetUser(get, timeout=10)).display_name == "v1"
    assert (await b.users.GetUser(get, timeout=10)).display_name == "v1"

    for round_number in range(2, 6):
        writer, reader = (a, b) if round_number % 2 else (b, a)
        name = f"v{round_number}"
        await writer.users.UpdateUser(
            users_pb2.UpdateUserRequest(user={"user_id": user.user_id, "display_name": name}), timeout=10
        )
        assert (await reader.users.GetUser(get, timeout=10)).display_name == name
        assert (await writer.users.GetUser(get, timeout=10)).display_name == name

    await a.users.AddDevice(
        users_pb2.AddDeviceRequest(user_id=user.user_id, device={"token": "tok", "platform": "DEVICE_PLATFORM_WEB"}),
        timeout=10,
    )
    assert [d.token for d in (await b.users.GetUser(get, timeout=10)).devices] == ["tok"]


async def test_template_writes_on_one_instance_are_seen_by_the_other(
    start_clarion: Callable[..., Any], redis_cache_factory: Callable[[], RedisCache]
) -> None:
    a: RunningClarion = await start_clarion(cache=redis_cache_factory())
    b: RunningClarion = await start_clarion(cache=redis_cache_factory())
    template = {"template_key": "shared", "subject": "Hi {name}", "body": "v1"}
    await a.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=template), timeout=10)
    get = templates_pb2.GetTemplateRequest(template_key="shared")
    assert (await b.templates.GetTemplate(get, timeout=10)).body == "v1"

    await a.templates.UpdateTemplate(
        templates_pb2.UpdateTemplateRequest(template={"template_key": "shared", "body": "v2"}), timeout=10
    )
    assert (await b.templates.GetTemplate(get, timeout=10)).version == 2
    render = templates_pb2.RenderTemplateRequest(template_key="shared")
    render.data.update({"name": "Ana"})
    assert (await b.templates.RenderTemplate(render, timeout=10)).email.body == "v2"

    await b.templates.DeleteTemplate(templates_pb2.DeleteTemplateRequest(template_key="shared"), timeout=10)
    assert (await a.templates.GetTemplate(get, timeout=10)).HasField("delete_time")
