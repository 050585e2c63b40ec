"""TemplateService over REST, through the real Envoy: the seed system's requests unchanged, and every RPC."""

from __future__ import annotations

import pytest

from tests.integration.gateway.conftest import RestClient

pytestmark = pytest.mark.integration

# The seed system's request, byte for byte but for the host.
SEED_TEMPLATE = {
    "template_key": "WEEKLY_DIGEST",
    "subject": "Your Weekly {app_name} Digest: {new_updates} new items!",
    "body": "Check out your latest activity. See summary: {digest_link}",
    "html_body": (
        '<h3>Weekly Summary</h3><p>You have {new_updates} new items. <a href="{digest_link}">View Digest</a></p>'
    ),
}
DATA = {"app_name": "MyApp", "new_updates": "10", "digest_link": "https://example.com/digest"}
RENDERED_EMAIL = {
    "subject": "Your Weekly MyApp Digest: 10 new items!",
    "body": "Check out your latest activity. See summary: https://example.com/digest",
    "html_body": (
        '<h3>Weekly Summary</h3><p>You have 10 new items. <a href="https://example.com/digest">View Digest</a></p>'
    ),
}


async def test_the_seed_template_requests_work_unchanged(rest: RestClient) -> None:
    created = await rest.post("/v1/templates", SEED_TEMPLATE)
    assert created.status == 200, created.body
    template = created.json()
    assert template["template_key"] == "WEEKLY_DIGEST"
    assert template["version"] == 1
    assert template["html_body"] == SEED_TEMPLATE["html_body"]
    assert template["syntax"] == "TEMPLATE_SYNTAX_BRACES"

    fetched = await rest.get("/v1/templates/WEEKLY_DIGEST")
    assert fetched.status == 200
    assert fetched.json() == template

    # The seed's path, with the key in the body, and the AIP custom method, with the key in the path.
    for path, body in [
        ("/v1/templates/render", {"template_key": "WEEKLY_DIGEST", "data": DATA}),
        ("/v1/templates/WEEKLY_DIGEST:render", {"data": DATA}),
    ]:
        rendered = await rest.post(path, body)
        assert rendered.status == 200, rendered.body
        result = rendered.json()
        assert (result["template_key"], result["version"], result["locale"]) == ("WEEKLY_DIGEST", 1, "en")
        assert result["email"] == RENDERED_EMAIL


async def test_update_makes_a_version_and_old_versions_stay_readable(rest: RestClient) -> None:
    assert (await rest.post("/v1/templates", SEED_TEMPLATE)).status == 200

    updated = await rest.patch("/v1/templates/WEEKLY_DIGEST?update_mask=subject", {"subject": "{app_name}: news"})
    assert updated.status == 200, updated.body
    assert (updated.json()["version"], updated.json()["subject"]) == (2, "{app_name}: news")
    assert updated.json()["body"] == SEED_TEMPLATE["body"], "a field outside the mask is left alone"

    first = await rest.get("/v1/templates/WEEKLY_DIGEST?version=1")
    assert first.json()["subject"] == SEED_TEMPLATE["subject"]
    rendered = await rest.post("/v1/templates/WEEKLY_DIGEST:render", {"version": 1, "data": DATA})
    assert rendered.json()["email"]["subject"] == RENDERED_EMAIL["subject"]

    versions = await rest.get("/v1/templates/WEEKLY_DIGEST/versions?page_size=1")
    assert versions.status == 200, versions.body
    page = versions.json()
    assert [t["version"] for t in page["templates"]] == [2]
    assert page["next_page_token"]
    rest_of_them = await rest.get(f"/v1/templates/WEEKLY_DIGEST/versions?page_token={page['next_page_token']}")
    assert [t["version"] for t in rest_of_them.json()["templates"]] == [1]


async def test_list_and_delete_templates(rest: RestClient) -> None:
    for key in ("alpha", "beta"):
        assert (
            await rest.post("/v1/templates", {"template_key": key, "subject": "Hi {name}", "body": "Hello {name}"})
        ).status == 200

    listed = await rest.get("/v1/templates?page_size=10")
    assert listed.status == 200, listed.body
    assert sorted(t["template_key"] for t in listed.json()["templates"]) == ["alpha", "beta"]

    deleted = await rest.delete("/v1/templates/alpha")
    assert (deleted.status, deleted.json()) == (200, {})
    live = await rest.get("/v1/templates")
    assert [t["template_key"] for t in live.json()["templates"]] == ["beta"]
    with_deleted = await rest.get("/v1/templates?show_deleted=true")
    assert sorted(t["template_key"] for t in with_deleted.json()["templates"]) == ["alpha", "beta"]
    # A deleted template cannot be rendered: FAILED_PRECONDITION, which HTTP says as 400, with its reason.
    refused = await rest.post("/v1/templates/alpha:render", {"data": {"name": "x"}})
    assert refused.status == 400, refused.body
    error = refused.json()
    assert error["code"] == 9
    assert error["details"][0]["reason"] == "TEMPLATE_DELETED"
