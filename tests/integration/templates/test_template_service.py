"""TemplateService against real PostgreSQL, through a real gRPC server and client."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2

from clarion.v1 import common_pb2, templates_pb2
from tests.helpers import status_detail
from tests.integration.conftest import RunningClarion
from tests.integration.users.test_user_service import rpc_error, violations

pytestmark = pytest.mark.integration

SEED_TEMPLATE = templates_pb2.Template(
    template_key="WEEKLY_DIGEST",
    subject="Your Weekly {app_name} Digest: {new_updates} new items!",
    body="Check out your latest activity. See summary: {digest_link}",
    html_body='<h3>Weekly Summary</h3><p>You have {new_updates} new items. <a href="{digest_link}">View Digest</a></p>',
)
SEED_DATA = {"app_name": "MyApp", "new_updates": "10", "digest_link": "https://example.com/digest"}


def data(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


async def create(clarion: RunningClarion, template: templates_pb2.Template | dict[str, Any]) -> templates_pb2.Template:
    created: templates_pb2.Template = await clarion.templates.CreateTemplate(
        templates_pb2.CreateTemplateRequest(template=template), timeout=10
    )
    return created


def render(clarion: RunningClarion, key: str, values: dict[str, Any], **kw: Any) -> Any:
    """The RenderTemplate call (await it for the response, or pass it to rpc_error)."""
    request = templates_pb2.RenderTemplateRequest(template_key=key, data=data(values), **kw)
    return clarion.templates.RenderTemplate(request, timeout=10)


async def test_the_seed_template_renders_exactly(clarion: RunningClarion) -> None:
    created = await create(clarion, SEED_TEMPLATE)
    assert created.version == 1
    assert created.name == "templates/WEEKLY_DIGEST"
    assert created.syntax == templates_pb2.TEMPLATE_SYNTAX_BRACES
    assert list(created.channels) == [common_pb2.CHANNEL_EMAIL]
    assert created.default_locale == "en"

    rendered = await render(clarion, "WEEKLY_DIGEST", {**SEED_DATA, "digest_link": 'https://example.com/d?a=1&b="x"'})
    assert rendered.email.subject == "Your Weekly MyApp Digest: 10 new items!"
    assert rendered.email.body == 'Check out your latest activity. See summary: https://example.com/d?a=1&b="x"'
    assert rendered.email.html_body == (
        "<h3>Weekly Summary</h3><p>You have 10 new items. "
        '<a href="https://example.com/d?a=1&amp;b=&#34;x&#34;">View Digest</a></p>'
    )
    assert rendered.version == 1
    assert rendered.locale == "en"
    assert not rendered.HasField("push")


async def test_numbers_from_json_render_as_integers(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    rendered = await render(clarion, "WEEKLY_DIGEST", {**SEED_DATA, "new_updates": 10})
    assert rendered.email.subject == "Your Weekly MyApp Digest: 10 new items!"


async def test_jinja_template_with_push_content(clarion: RunningClarion) -> None:
    template = templates_pb2.Template(
        template_key="order-shipped",
        subject="Order {{ order.id }} shipped",
        body="{% if express %}Express! {% endif %}Arrives {{ eta }}.",
        html_body="<p>{{ note }}</p>",
        push_title="Shipped: {{ order.id }}",
        push_body="Arrives {{ eta }}",
        push_data={"order_id": "{{ order.id }}", "kind": "shipping"},
    )
    created = await create(clarion, template)
    assert created.syntax == templates_pb2.TEMPLATE_SYNTAX_JINJA
    assert set(created.channels) == {common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_PUSH}
    rendered = await render(
        clarion, "order-shipped", {"order": {"id": 42}, "express": True, "eta": "Friday", "note": "<b>fragile</b>"}
    )
    assert rendered.email.subject == "Order 42 shipped"
    assert rendered.email.body == "Express! Arrives Friday."
    assert rendered.email.html_body == "<p>&lt;b&gt;fragile&lt;/b&gt;</p>"
    assert rendered.push.title == "Shipped: 42"
    assert dict(rendered.push.data) == {"order_id": "42", "kind": "shipping"}


async def test_missing_variables_are_all_named(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    code, status = await rpc_error(render(clarion, "WEEKLY_DIGEST", {"app_name": "MyApp"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(status)) == {"data.new_updates", "data.digest_link"}
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "MISSING_TEMPLATE_VARIABLES"


async def test_subject_never_carries_a_line_break(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    rendered = await render(clarion, "WEEKLY_DIGEST", {**SEED_DATA, "app_name": "X\r\nBcc: victim@example.com"})
    assert "\r" not in rendered.email.subject
    assert "\n" not in rendered.email.subject


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ({"template_key": "", "subject": "s", "body": "b"}, "template.template_key"),
        ({"template_key": "9lives", "subject": "s", "body": "b"}, "template.template_key"),
        ({"template_key": "has space", "subject": "s", "body": "b"}, "template.template_key"),
        ({"template_key": "k"}, "template.subject"),
        ({"template_key": "k", "body": "no subject"}, "template.subject"),
        ({"template_key": "k", "subject": "no body"}, "template.body"),
        ({"template_key": "k", "subject": "two\nlines", "body": "b"}, "template.subject"),
        ({"template_key": "k", "subject": "s", "body": "b\x00"}, "template.body"),
        ({"template_key": "k", "subject": "s", "body": "b", "description": "d\x00"}, "template.description"),
        (
            {"template_key": "k", "subject": "s", "body": "b", "default_locale": "not a locale"},
            "template.default_locale",
        ),
        ({"template_key": "k", "subject": "s", "body": "{{ unclosed"}, "template.body"),
        ({"template_key": "k", "subject": "s", "body": "line1\n{% if %}"}, "template.body"),
        ({"template_key": "k", "subject": "{ spaced }", "body": "b"}, "template.subject"),
        (
            {
                "template_key": "k",
                "subject": "s",
                "body": "b",
                "localizations": {"xx yy": {"subject": "s", "body": "b"}},
            },
            'template.localizations["xx yy"]',
        ),
        (
            {"template_key": "k", "subject": "s", "body": "b", "localizations": {"pt": {"push_body": "p"}}},
            'template.localizations["pt"]',
        ),
        (
            {
                "template_key": "k",
                "subject": "s",
                "body": "b",
                "localizations": {"pt": {"subject": "s", "body": "{{x"}},
            },
            'template.localizations["pt"].body',
        ),
    ],
)
async def test_create_rejects_bad_templates_naming_the_field(
    clarion: RunningClarion, template: dict[str, Any], field: str
) -> None:
    code, status = await rpc_error(
        clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=template), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(status), violations(status)


async def test_a_syntax_error_names_the_line(clarion: RunningClarion) -> None:
    template = {"template_key": "k", "subject": "s", "body": "one\ntwo\n{% for x in %}"}
    _, status = await rpc_error(
        clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=template), timeout=10)
    )
    assert "line 3" in violations(status)["template.body"]


async def test_duplicate_key_is_already_exists(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    code, status = await rpc_error(
        clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=SEED_TEMPLATE), timeout=10)
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "TEMPLATE_ALREADY_EXISTS"


async def test_updates_make_immutable_versions(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    v2 = await clarion.templates.UpdateTemplate(
        templates_pb2.UpdateTemplateRequest(
            template={"template_key": "WEEKLY_DIGEST", "subject": "New {app_name} digest"},
            update_mask={"paths": ["subject"]},
        ),
        timeout=10,
    )
    assert v2.version == 2
    assert v2.subject == "New {app_name} digest"
    assert v2.body == SEED_TEMPLATE.body, "fields outside the mask carry over"
    v3 = await clarion.templates.UpdateTemplate(
        templates_pb2.UpdateTemplateRequest(template={"template_key": "WEEKLY_DIGEST", "description": "weekly"}),
        timeout=10,
    )
    assert (v3.version, v3.description, v3.subject) == (3, "weekly", v2.subject)

    latest = await clarion.templates.GetTemplate(
        templates_pb2.GetTemplateRequest(template_key="WEEKLY_DIGEST"), timeout=10
    )
    assert latest == v3
    first = await clarion.templates.GetTemplate(
        templates_pb2.GetTemplateRequest(template_key="WEEKLY_DIGEST", version=1), timeout=10
    )
    assert first.subject == SEED_TEMPLATE.subject
    rendered_v1 = await render(clarion, "WEEKLY_DIGEST", SEED_DATA, version=1)
    assert rendered_v1.email.subject == "Your Weekly MyApp Digest: 10 new items!"
    assert (await render(clarion, "WEEKLY_DIGEST", SEED_DATA)).email.subject == "New MyApp digest"

    versions = await clarion.templates.ListTemplateVersions(
        templates_pb2.ListTemplateVersionsRequest(template_key="WEEKLY_DIGEST", page_size=2), timeout=10
    )
    assert [t.version for t in versions.templates] == [3, 2]
    rest = await clarion.templates.ListTemplateVersions(
        templates_pb2.ListTemplateVersionsRequest(
            template_key="WEEKLY_DIGEST", page_size=2, page_token=versions.next_page_token
        ),
        timeout=10,
    )
    assert [t.version for t in rest.templates] == [1]
    assert rest.next_page_token == ""


async def test_update_validates_mask_and_content(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    for template, paths, field in [
        ({"template_key": "WEEKLY_DIGEST"}, ["version"], "update_mask"),
        ({"template_key": "WEEKLY_DIGEST"}, ["nonsense"], "update_mask"),
        ({"template_key": "WEEKLY_DIGEST", "subject": "{{ broken"}, ["subject"], "template.subject"),
    ]:
        request = templates_pb2.UpdateTemplateRequest(template=template, update_mask={"paths": paths})
        code, status = await rpc_error(clarion.templates.UpdateTemplate(request, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in violations(status)
    latest = await clarion.templates.GetTemplate(
        templates_pb2.GetTemplateRequest(template_key="WEEKLY_DIGEST"), timeout=10
    )
    assert latest.version == 1, "a rejected update makes no version"


async def test_not_found_for_missing_template_and_version(clarion: RunningClarion) -> None:
    code, status = await rpc_error(
        clarion.templates.GetTemplate(templates_pb2.GetTemplateRequest(template_key="nope"), timeout=10)
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "TEMPLATE_NOT_FOUND"
    await create(clarion, SEED_TEMPLATE)
    code, status = await rpc_error(
        clarion.templates.GetTemplate(
            templates_pb2.GetTemplateRequest(template_key="WEEKLY_DIGEST", version=9), timeout=10
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "TEMPLATE_VERSION_NOT_FOUND"
    for call in [
        clarion.templates.UpdateTemplate(
            templates_pb2.UpdateTemplateRequest(template={"template_key": "nope", "subject": "s"}), timeout=10
        ),
        clarion.templates.DeleteTemplate(templates_pb2.DeleteTemplateRequest(template_key="nope"), timeout=10),
        clarion.templates.ListTemplateVersions(
            templates_pb2.ListTemplateVersionsRequest(template_key="nope"), timeout=10
        ),
        render(clarion, "nope", {}),
    ]:
        code, _ = await rpc_error(call)
        assert code == grpc.StatusCode.NOT_FOUND


async def test_delete_is_soft(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    await clarion.templates.DeleteTemplate(
        templates_pb2.DeleteTemplateRequest(template_key="WEEKLY_DIGEST"), timeout=10
    )
    kept = await clarion.templates.GetTemplate(
        templates_pb2.GetTemplateRequest(template_key="WEEKLY_DIGEST"), timeout=10
    )
    assert kept.HasField("delete_time")
    assert kept.subject == SEED_TEMPLATE.subject

    code, status = await rpc_error(render(clarion, "WEEKLY_DIGEST", SEED_DATA))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "TEMPLATE_DELETED"
    code, _ = await rpc_error(
        clarion.templates.UpdateTemplate(
            templates_pb2.UpdateTemplateRequest(template={"template_key": "WEEKLY_DIGEST", "subject": "s"}), timeout=10
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    listed = await clarion.templates.ListTemplates(templates_pb2.ListTemplatesRequest(), timeout=10)
    assert [t.template_key for t in listed.templates] == []
    listed = await clarion.templates.ListTemplates(templates_pb2.ListTemplatesRequest(show_deleted=True), timeout=10)
    assert [t.template_key for t in listed.templates] == ["WEEKLY_DIGEST"]

    revived = await create(clarion, SEED_TEMPLATE)
    assert revived.version == 2
    assert not revived.HasField("delete_time")
    assert (await render(clarion, "WEEKLY_DIGEST", SEED_DATA)).email.subject.startswith("Your Weekly MyApp")


async def test_locale_fallback(clarion: RunningClarion) -> None:
    template = templates_pb2.Template(
        template_key="welcome",
        subject="Welcome {name}",
        body="Hello {name}",
        default_locale="en",
        localizations={
            "pt": templates_pb2.TemplateContent(subject="Bem-vindo {name}", body="Olá {name}"),
            "pt-br": templates_pb2.TemplateContent(subject="Bem-vindo, {name}!", body="Oi {name}"),
        },
    )
    created = await create(clarion, template)
    assert set(created.localizations) == {"pt", "pt-BR"}
    cases = {
        "pt-BR": ("pt-BR", "Oi Ana"),
        "pt-PT": ("pt", "Olá Ana"),
        "pt": ("pt", "Olá Ana"),
        "fr-FR": ("en", "Hello Ana"),
        "": ("en", "Hello Ana"),
    }
    for requested, (locale, body) in cases.items():
        rendered = await render(clarion, "welcome", {"name": "Ana"}, locale=requested)
        assert (rendered.locale, rendered.email.body) == (locale, body), requested
    code, status = await rpc_error(render(clarion, "welcome", {"name": "Ana"}, locale="not a tag"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "locale" in violations(status)


async def test_list_templates_pages_by_key(clarion: RunningClarion) -> None:
    for key in ["c", "a", "e", "b", "d"]:
        await create(clarion, {"template_key": key, "push_body": "hi"})
    seen: list[str] = []
    token = ""
    while True:
        page = await clarion.templates.ListTemplates(
            templates_pb2.ListTemplatesRequest(page_size=2, page_token=token), timeout=10
        )
        seen += [t.template_key for t in page.templates]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["a", "b", "c", "d", "e"]
    first = await clarion.templates.ListTemplates(templates_pb2.ListTemplatesRequest(page_size=1), timeout=10)
    code, _ = await rpc_error(
        clarion.templates.ListTemplates(
            templates_pb2.ListTemplatesRequest(page_size=1, page_token=first.next_page_token, show_deleted=True),
            timeout=10,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_render_validates_its_request(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    big = {"blob": "x" * (70 * 1024)}
    for call, field in [
        (render(clarion, "WEEKLY_DIGEST", SEED_DATA, version=-1), "version"),
        (render(clarion, "WEEKLY_DIGEST", big), "data"),
        (render(clarion, "bad key!", SEED_DATA), "template_key"),
    ]:
        code, status = await rpc_error(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in violations(status)


async def test_a_template_bomb_is_refused_not_hung(clarion: RunningClarion) -> None:
    loop = "{% for _ in range(10000) %}"
    bomb = loop * 3 + "{% endfor %}" * 3
    await create(clarion, {"template_key": "bomb", "subject": "s", "body": bomb})
    code, _ = await rpc_error(render(clarion, "bomb", {}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_detected_syntax_follows_each_version_but_an_explicit_one_sticks(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    v2 = await clarion.templates.UpdateTemplate(
        templates_pb2.UpdateTemplateRequest(
            template={"template_key": "WEEKLY_DIGEST", "subject": "{{ app_name }} digest"},
            update_mask={"paths": ["subject"]},
        ),
        timeout=10,
    )
    assert v2.syntax == templates_pb2.TEMPLATE_SYNTAX_JINJA
    assert (await render(clarion, "WEEKLY_DIGEST", SEED_DATA, version=2)).email.subject == "MyApp digest"

    literal = {"template_key": "literal", "syntax": "TEMPLATE_SYNTAX_BRACES", "subject": "{{ {name} }}", "body": "b"}
    await create(clarion, literal)
    assert (await render(clarion, "literal", {"name": "Ana"})).email.subject == "{ Ana }"
    updated = await clarion.templates.UpdateTemplate(
        templates_pb2.UpdateTemplateRequest(template={"template_key": "literal", "body": "{{x}}"}), timeout=10
    )
    assert updated.syntax == templates_pb2.TEMPLATE_SYNTAX_BRACES


async def test_a_draft_renders_unsaved_in_the_locale_asked_for(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    draft = templates_pb2.Template(
        # Jinja, where the stored version has braces: the draft's syntax is its own, detected as for a new version.
        subject="Draft: {{ app_name }}",
        body="{{ new_updates }} new",
        localizations={
            "pt-BR": templates_pb2.TemplateContent(subject="Rascunho: {{ app_name }}", body="{{ new_updates }} novos")
        },
    )

    rendered = await render(clarion, "WEEKLY_DIGEST", SEED_DATA, draft=draft, version=1)
    localized = await render(clarion, "WEEKLY_DIGEST", SEED_DATA, draft=draft, locale="pt-BR")
    # An edit of the draft is what renders next, not a compiled copy of the last one.
    draft.body = "{{ new_updates }} brand new"
    edited = await render(clarion, "WEEKLY_DIGEST", SEED_DATA, draft=draft)

    assert (rendered.version, rendered.email.subject, rendered.email.body) == (0, "Draft: MyApp", "10 new")
    assert (localized.locale, localized.email.subject) == ("pt-BR", "Rascunho: MyApp")
    assert edited.email.body == "10 brand new"
    # Nothing was saved, and the stored version still renders as before.
    versions = await clarion.templates.ListTemplateVersions(
        templates_pb2.ListTemplateVersionsRequest(template_key="WEEKLY_DIGEST"), timeout=10
    )
    assert [t.version for t in versions.templates] == [1]
    stored = await render(clarion, "WEEKLY_DIGEST", SEED_DATA)
    assert stored.email.subject == "Your Weekly MyApp Digest: 10 new items!"


async def test_a_bad_draft_is_invalid_argument_naming_the_draft_field_and_line(clarion: RunningClarion) -> None:
    await create(clarion, SEED_TEMPLATE)
    broken = templates_pb2.Template(subject="Hi", body="line one\n{% if %}")
    code, status = await rpc_error(render(clarion, "WEEKLY_DIGEST", SEED_DATA, draft=broken))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = violations(status).items()
    assert field == "draft.body"
    assert "line 2" in description

    code, status = await rpc_error(render(clarion, "WEEKLY_DIGEST", SEED_DATA, draft=templates_pb2.Template()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "draft.subject" in violations(status)

    missing = templates_pb2.Template(subject="Hi {name}", body="x")
    code, status = await rpc_error(render(clarion, "WEEKLY_DIGEST", {}, draft=missing))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "data.name" in violations(status)
