"""BatchRenderTemplates: each request rendered as RenderTemplate would, or its own error, in order."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from clarion.v1 import templates_pb2
from tests.helpers import status_detail
from tests.integration.conftest import RunningClarion
from tests.integration.templates.test_template_service import SEED_DATA, SEED_TEMPLATE, create, data, render
from tests.integration.users.test_user_service import rpc_error, violations

pytestmark = pytest.mark.integration


def item(key: str, values: dict[str, object], **fields: object) -> templates_pb2.RenderTemplateRequest:
    return templates_pb2.RenderTemplateRequest(template_key=key, data=data(values), **fields)


async def test_each_result_is_the_rendering_or_the_error_of_its_request(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    await create(clarion, {"template_key": "gone", "push_title": "Hi", "push_body": "B"})
    await clarion.templates.DeleteTemplate(templates_pb2.DeleteTemplateRequest(template_key="gone"), timeout=10)
    requests = [
        item("WEEKLY_DIGEST", SEED_DATA),
        item("nope", {}),
        item("WEEKLY_DIGEST", {"app_name": "X"}),
        item("gone", {}),
        item("WEEKLY_DIGEST", SEED_DATA, version=7),
        item("WEEKLY_DIGEST", {**SEED_DATA, "app_name": "Other"}),
    ]
    response = await clarion.templates.BatchRenderTemplates(
        templates_pb2.BatchRenderTemplatesRequest(requests=requests), timeout=10
    )
    results = list(response.results)
    assert len(results) == len(requests)
    assert results[0].rendered == await render(clarion, "WEEKLY_DIGEST", SEED_DATA), "as RenderTemplate renders it"
    assert results[5].rendered.email.subject == "Your Weekly Other Digest: 10 new items!"
    assert results[1].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    missing = results[2].error
    assert missing.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert violations(missing) == {
        "data.new_updates": "is used by the template",
        "data.digest_link": "is used by the template",
    }
    assert status_detail(missing, error_details_pb2.ErrorInfo).reason == "MISSING_TEMPLATE_VARIABLES"
    assert results[3].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert results[4].error.code == grpc.StatusCode.NOT_FOUND.value[0], "no version 7"


async def test_an_empty_or_oversized_batch_is_invalid_argument(clarion: RunningClarion) -> None:
    for count in (0, 1001):
        request = templates_pb2.BatchRenderTemplatesRequest(requests=[item("k", {})] * count)
        code, status = await rpc_error(clarion.templates.BatchRenderTemplates(request, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "requests" in violations(status)


async def test_a_bomb_uses_the_batch_time_and_what_follows_is_left_to_ask_again(clarion: RunningClarion) -> None:
    loop = "{% for _ in range(10000) %}"
    await create(clarion, {"template_key": "bomb", "subject": "s", "body": loop * 3 + "{% endfor %}" * 3})
    await create(clarion, {"template_key": "after", "subject": "Hi {{ n }}", "body": "b"})
    await create(clarion, SEED_TEMPLATE)
    requests = [item("bomb", {}), item("after", {"n": 1}), item("WEEKLY_DIGEST", SEED_DATA)]
    response = await clarion.templates.BatchRenderTemplates(
        templates_pb2.BatchRenderTemplatesRequest(requests=requests), timeout=30
    )
    bomb, after, braces = response.results
    assert bomb.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], "stopped by its own budget"
    assert after.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert status_detail(after.error, error_details_pb2.ErrorInfo).reason == "BATCH_RENDER_BUDGET_EXHAUSTED"
    # Brace templates render in the server's process, linear in their size, outside the Jinja workers' budget.
    assert braces.rendered.email.subject.startswith("Your Weekly")


async def test_numbers_json_cannot_hold_are_invalid_argument_naming_the_field(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    code, status = await rpc_error(render(clarion, "WEEKLY_DIGEST", {**SEED_DATA, "n": float("nan")}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "data" in violations(status)
    response = await clarion.templates.BatchRenderTemplates(
        templates_pb2.BatchRenderTemplatesRequest(requests=[item("WEEKLY_DIGEST", {"n": float("inf")})]), timeout=10
    )
    assert response.results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
