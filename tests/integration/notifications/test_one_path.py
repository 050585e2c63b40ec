"""One way to reach UserService and TemplateService (docs/adr/0001-users-and-templates-stay-services.md): in process
(`clarion serve all`) and over gRPC, a call answers the same: the same typed errors with the same fields and reasons,
a sick service as the same UNAVAILABLE, the same deadline, counted by the same breaker and the same metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from clarion.core.errors import ClarionError, InvalidArgument, NotFound, Unavailable
from clarion.notifications.clients import ServiceClients
from clarion.v1 import templates_pb2, users_pb2
from tests.integration.conftest import RunningClarion
from tests.integration.notifications.test_send_notification import seed

pytestmark = pytest.mark.integration


async def answer(call: Any) -> tuple[type, str | None, dict[str, str], list[str]]:
    """What a client call raised: its type, reason, metadata and field names."""
    with pytest.raises(ClarionError) as caught:
        await call
    error = caught.value
    fields = [v.field for v in error.violations] if isinstance(error, InvalidArgument) else []
    return type(error), error.reason, dict(error.metadata), fields


@pytest.fixture(params=["grpc", "in_process"])
async def clients(request: pytest.FixtureRequest, start_clarion: Callable[..., Any]) -> tuple[str, RunningClarion]:
    running: RunningClarion = await start_clarion(in_process=request.param == "in_process")
    return request.param, running


async def test_the_callers_mistakes_answer_the_same_over_either_transport(
    start_clarion: Callable[..., Any],
) -> None:
    # Two instances on one database: one calls the other services over gRPC, one in process.
    instances: list[RunningClarion] = [await start_clarion(in_process=in_process) for in_process in (False, True)]
    await seed(instances[0])
    answers = []
    for running in instances:
        client = running.resources.clients
        missing_user = await answer(client.get_user("nobody-here"))
        missing_data = await answer(
            client.render(template_key="WEEKLY_DIGEST", version=0, locale="en", data={"app_name": "A"})
        )
        missing_template = await answer(client.render(template_key="NO_SUCH", version=0, locale="en", data={}))
        answers.append((missing_user, missing_data, missing_template))
    over_grpc, in_process_ = answers
    assert over_grpc == in_process_
    missing_user, missing_data, _ = over_grpc
    assert missing_user[:3] == (NotFound, "USER_NOT_FOUND", {"user_id": "nobody-here"})
    assert missing_data[0] is InvalidArgument
    assert missing_data[3]
    assert all(field.startswith("message_data.") for field in missing_data[3])


class _Sick:
    """A UserService of this process that fails in one of the ways a service can."""

    def __init__(self, failure: str) -> None:
        self.failure = failure

    async def GetUser(self, request: users_pb2.GetUserRequest, context: Any) -> users_pb2.User:
        if self.failure == "slow":
            await asyncio.sleep(5)
        if self.failure == "unavailable":
            raise Unavailable("busy", retry_after_s=1.0)
        raise RuntimeError("a bug")

    async def BatchGetUsers(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def RemoveDevice(self, request: Any, context: Any) -> Any:
        raise NotImplementedError


def calls(transport: str, code: str) -> float:
    labels = {"service": "UserService", "method": "GetUser", "transport": transport, "code": code}
    return REGISTRY.get_sample_value("clarion_dependency_calls_total", labels) or 0.0


@pytest.mark.parametrize("failure", ["slow", "unavailable", "bug"])
async def test_a_sick_service_in_process_is_unavailable_as_over_grpc(failure: str) -> None:
    # Nothing listens on the addresses: only the in-process service answers.
    client = ServiceClients(
        users_address="127.0.0.1:1",
        templates_address="127.0.0.1:1",
        timeout_s=0.3,
        breaker_failure_threshold=2,
        breaker_reset_s=30,
    )
    client.call_in_process(users=_Sick(failure))
    before = calls("in_process", "UNAVAILABLE")
    kind, reason, metadata, _ = await answer(client.get_user("ada"))
    assert (kind, reason, metadata) == (Unavailable, "DEPENDENCY_UNAVAILABLE", {"service": "UserService"})
    assert calls("in_process", "UNAVAILABLE") == before + 1
    # The breaker counts it as it counts a failed gRPC call: after the threshold it answers without calling.
    await answer(client.get_user("ada"))
    with pytest.raises(Unavailable, match="circuit open"):
        await client.get_user("ada")


async def test_the_calls_are_counted_by_transport(clients: tuple[str, RunningClarion]) -> None:
    transport, running = clients
    await seed(running)
    before = calls(transport, "NOT_FOUND")
    with pytest.raises(NotFound):
        await running.resources.clients.get_user("nobody-here")
    assert calls(transport, "NOT_FOUND") == before + 1
    rendered = await running.resources.clients.render(
        template_key="WEEKLY_DIGEST",
        version=0,
        locale="en",
        data={"app_name": "A", "new_updates": "1", "digest_link": "https://example.com"},
    )
    assert isinstance(rendered, templates_pb2.RenderTemplateResponse)
