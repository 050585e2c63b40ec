"""TemplateService over gRPC: versions, soft delete, localised content and rendering."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import structlog
from google.protobuf import empty_pb2
from grpc.aio import ServicerContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clarion.core.cache import Cache
from clarion.core.errors import ClarionError, FieldViolation, InvalidArgument, Unavailable, to_status
from clarion.core.logging import get_logger
from clarion.core.pagination import decode_keyset, encode_page_token, page_size, position_int, position_text
from clarion.core.server import ServiceRegistration, service_registration
from clarion.core.validation import Violations, normalize_language_tag, struct_to_dict
from clarion.delivery.sms_text import measure
from clarion.templates import content
from clarion.templates.isolation import RenderJob, TemplateProcesses
from clarion.templates.models import TemplateVersionRow
from clarion.templates.rendering import (
    Content,
    MissingVariablesError,
    NullVariablesError,
    Rendered,
    Syntax,
    TemplateRenderError,
    normalize_data,
)
from clarion.templates.repository import TemplateRepository, template_deleted
from clarion.v1 import common_pb2, templates_pb2, templates_pb2_grpc

log = get_logger(__name__)

Context = ServicerContext[Any, Any]
MAX_DATA_BYTES = 64 * 1024
# The most renders one BatchRenderTemplates may ask for, and the rendering time they share: a template that uses its
# whole budget (1 s each) leaves the rest of its batch unrendered, to be asked for again, instead of holding a
# thread for minutes.
MAX_BATCH = 100
BATCH_RENDER_BUDGET_S = 1.0
_UPDATABLE_PATHS = frozenset(
    {"description", "default_locale", "localizations", "syntax", *content.MAP_PARTS, *content.PARTS}
)


def _cache_key(key: str) -> str:
    return f"template:{key}"


async def _version_row(template: templates_pb2.Template, key: str, processes: TemplateProcesses) -> TemplateVersionRow:
    """The row of a new version, once every locale compiles (Jinja in a worker process, under its budget)."""
    default_locale, contents, syntax = content.validate_template(template)
    failure = await processes.first_syntax_error(contents, syntax)
    if failure is not None:
        raise content.syntax_error(*failure, default_locale=default_locale)
    return TemplateVersionRow(
        key=key,
        description=template.description,
        default_locale=default_locale,
        syntax=content.stored_syntax(template),
        content={locale: content.content_to_json(c) for locale, c in contents.items()},
    )


def _merge(
    current: templates_pb2.Template, change: templates_pb2.Template, paths: list[str], *, auto_syntax: bool
) -> templates_pb2.Template:
    """The latest version with the masked fields of `change` applied (AIP-134; no mask = the fields that are set).
    A template whose syntax was detected keeps being detected unless the update sets one."""
    if not paths:
        paths = [f.name for f, _ in change.ListFields() if f.name in _UPDATABLE_PATHS]
    unknown = [p for p in paths if p not in _UPDATABLE_PATHS]
    if unknown:
        raise InvalidArgument.for_field(
            "update_mask",
            f"unknown or read-only path(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_UPDATABLE_PATHS))}",
        )
    merged = templates_pb2.Template()
    merged.CopyFrom(current)
    if auto_syntax:
        merged.ClearField("syntax")
    for path in paths:
        merged.ClearField(path)  # type: ignore[arg-type]
        if path in ("localizations", *content.MAP_PARTS):
            getattr(merged, path).MergeFrom(getattr(change, path))
        else:
            setattr(merged, path, getattr(change, path))
    return merged


def _data(request: templates_pb2.RenderTemplateRequest) -> dict[str, Any]:
    if request.data.ByteSize() > MAX_DATA_BYTES:
        raise InvalidArgument.for_field("data", f"must be at most {MAX_DATA_BYTES} bytes")
    data: dict[str, Any] = normalize_data(struct_to_dict(request.data, "data"))
    return data


def render_error(error: TemplateRenderError, *, field_prefix: str) -> InvalidArgument:
    """A rendering failure as the client sees it: every missing variable named, or the part that failed."""
    if isinstance(error, MissingVariablesError):
        return InvalidArgument(
            f"missing template variables: {', '.join(error.names)}",
            violations=[FieldViolation(f"{field_prefix}{name}", "is used by the template") for name in error.names],
            reason="MISSING_TEMPLATE_VARIABLES",
            metadata={"missing": ",".join(error.names)},
        )
    if isinstance(error, NullVariablesError):
        return InvalidArgument(
            f"null template variables: {', '.join(error.names)}",
            violations=[
                FieldViolation(f"{field_prefix}{name}", "is null; the template prints it: give it a value")
                for name in error.names
            ],
            reason="NULL_TEMPLATE_VARIABLES",
            metadata={"null": ",".join(error.names)},
        )
    part = error.part or "template"
    return InvalidArgument(
        f"template {part} could not be rendered: {error}",
        violations=[FieldViolation(f"template.{part}", str(error))],
        reason="TEMPLATE_RENDER_FAILED",
    )


class TemplateServicer(templates_pb2_grpc.TemplateServiceServicer):
    """Versioned, localised templates and their rendering."""

    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], cache: Cache, processes: TemplateProcesses
    ) -> None:
        self._sessions = sessions
        self._cache = cache
        self._processes = processes

    async def CreateTemplate(
        self, request: templates_pb2.CreateTemplateRequest, context: Context
    ) -> templates_pb2.Template:
        """Create a template at version 1 (or revive a deleted one as its next version)."""
        key = content.check_key(request.template.template_key, "template.template_key")
        row = await _version_row(request.template, key, self._processes)
        async with self._sessions.begin() as session:
            pair = await TemplateRepository(session).create(row)
            template = content.template_to_proto(pair)
        await self._cache.invalidate(_cache_key(key))
        log.info("template_created", template_key=key, version=template.version)
        return template

    async def GetTemplate(self, request: templates_pb2.GetTemplateRequest, context: Context) -> templates_pb2.Template:
        """The latest version, or the one asked for; deleted templates stay readable."""
        key = content.check_key(request.template_key)
        if request.version < 0:
            raise InvalidArgument.for_field("version", "must be positive, or 0 for the latest")
        return await self._get(key, request.version)

    async def _get(self, key: str, version: int) -> templates_pb2.Template:
        async def load() -> bytes:
            async with self._sessions() as session:
                pair = await TemplateRepository(session).version(key, version)
                return content.template_to_proto(pair).SerializeToString()

        field = f"v{version}" if version else "latest"
        return templates_pb2.Template.FromString(await self._cache.read_through(_cache_key(key), field, load) or b"")

    async def ListTemplates(
        self, request: templates_pb2.ListTemplatesRequest, context: Context
    ) -> templates_pb2.ListTemplatesResponse:
        """The latest version of each template, by key, a page at a time."""
        limit = page_size(request.page_size)
        filters = {"show_deleted": request.show_deleted}
        after_key = decode_keyset(request.page_token, filters, lambda position: position_text(position[0]))
        async with self._sessions() as session:
            pairs = await TemplateRepository(session).list_latest(
                after_key=after_key, limit=limit + 1, show_deleted=request.show_deleted
            )
        response = templates_pb2.ListTemplatesResponse(templates=[content.template_to_proto(p) for p in pairs[:limit]])
        if len(pairs) > limit:
            response.next_page_token = encode_page_token([pairs[limit - 1][0].key], filters)
        return response

    async def UpdateTemplate(
        self, request: templates_pb2.UpdateTemplateRequest, context: Context
    ) -> templates_pb2.Template:
        """Make version N+1 from the latest version and the masked fields."""
        key = content.check_key(request.template.template_key, "template.template_key")
        async with self._sessions.begin() as session:
            repository = TemplateRepository(session)
            head = await repository.head(key, for_update=True)
            if head.deleted_at is not None:
                raise template_deleted(key)
            latest = await repository.version(key, head.latest_version)
            merged = _merge(
                content.template_to_proto(latest),
                request.template,
                list(request.update_mask.paths),
                auto_syntax=latest[1].syntax == content.AUTO_SYNTAX,
            )
            version = await repository.add_version(head, await _version_row(merged, key, self._processes))
            template = content.template_to_proto((head, version))
        await self._cache.invalidate(_cache_key(key))
        log.info("template_updated", template_key=key, version=template.version)
        return template

    async def DeleteTemplate(self, request: templates_pb2.DeleteTemplateRequest, context: Context) -> empty_pb2.Empty:
        """Soft-delete: the template can no longer be sent; its versions stay readable."""
        key = content.check_key(request.template_key)
        async with self._sessions.begin() as session:
            await TemplateRepository(session).soft_delete(key)
        await self._cache.invalidate(_cache_key(key))
        log.info("template_deleted", template_key=key)
        return empty_pb2.Empty()

    async def ListTemplateVersions(
        self, request: templates_pb2.ListTemplateVersionsRequest, context: Context
    ) -> templates_pb2.ListTemplateVersionsResponse:
        """Every version of a template, newest first."""
        key = content.check_key(request.template_key)
        limit = page_size(request.page_size)
        filters = {"template_key": key}
        before = decode_keyset(request.page_token, filters, lambda position: position_int(position[0]))
        async with self._sessions() as session:
            head, versions = await TemplateRepository(session).list_versions(
                key, before_version=before, limit=limit + 1
            )
        response = templates_pb2.ListTemplateVersionsResponse(
            templates=[content.template_to_proto((head, v)) for v in versions[:limit]]
        )
        if len(versions) > limit:
            response.next_page_token = encode_page_token([versions[limit - 1].version], filters)
        return response

    async def RenderTemplate(
        self, request: templates_pb2.RenderTemplateRequest, context: Context
    ) -> templates_pb2.RenderTemplateResponse:
        """Render with data, as a preview; nothing is sent."""
        job = await self._prepare(request)
        try:
            rendered = await self._processes.render(*job.render_args)
        except TemplateRenderError as exc:
            raise render_error(exc, field_prefix="data.") from None
        return job.response(rendered)

    async def BatchRenderTemplates(
        self, request: templates_pb2.BatchRenderTemplatesRequest, context: Context
    ) -> templates_pb2.BatchRenderTemplatesResponse:
        """Render each request as RenderTemplate would; each result is its rendering or its error."""
        if not 0 < len(request.requests) <= MAX_BATCH:
            raise InvalidArgument.for_field("requests", f"give 1 to {MAX_BATCH} render requests")
        request_id = str(structlog.contextvars.get_contextvars().get("request_id", ""))
        results: list[templates_pb2.RenderTemplateResult] = []
        jobs: list[tuple[int, _RenderJob]] = []
        for item in request.requests:
            try:
                jobs.append((len(results), await self._prepare(item)))
            except ClarionError as exc:
                results.append(templates_pb2.RenderTemplateResult(error=to_status(exc, request_id=request_id)))
                continue
            results.append(templates_pb2.RenderTemplateResult())
        rendered = await self._processes.render_many(
            [job.render_args for _, job in jobs], budget_s=BATCH_RENDER_BUDGET_S
        )
        for (index, job), outcome in zip(jobs, rendered, strict=True):
            if isinstance(outcome, Rendered):
                results[index].rendered.CopyFrom(job.response(outcome))
                continue
            error = render_error(outcome, field_prefix="data.") if outcome is not None else _OUT_OF_TIME
            results[index].error.CopyFrom(to_status(error, request_id=request_id))
        return templates_pb2.BatchRenderTemplatesResponse(results=results)

    async def _prepare(self, request: templates_pb2.RenderTemplateRequest) -> _RenderJob:
        """Everything a render needs but the rendering: checked request, template version, locale, compiled."""
        key = content.check_key(request.template_key)
        violations = Violations()
        if request.version < 0:
            violations.add("version", "must be positive, or 0 for the latest")
        if request.locale:
            normalize_language_tag(request.locale, "locale", violations)
        violations.raise_if_any()
        data = _data(request)
        if request.HasField("draft"):
            return await self._prepare_draft(key, request.draft, request.locale, data)
        template = await self._get(key, request.version)
        if template.HasField("delete_time"):
            raise template_deleted(key)
        locale, localized = content.resolve_locale(template, request.locale)
        return _RenderJob(
            key, template.version, locale, content.channels_of(localized), localized, content.syntax_of(template), data
        )

    async def _prepare_draft(
        self, key: str, draft: templates_pb2.Template, requested_locale: str, data: dict[str, Any]
    ) -> _RenderJob:
        """A draft checked and compiled as CreateTemplate would (in a worker process, under its budget), unsaved."""
        default_locale, contents, syntax = content.validate_template(draft, prefix="draft.")
        failure = await self._processes.first_syntax_error(contents, syntax)
        if failure is not None:
            raise content.syntax_error(*failure, default_locale=default_locale, prefix="draft.")
        checked = templates_pb2.Template()
        checked.CopyFrom(draft)
        checked.default_locale = default_locale
        locale, localized = content.resolve_locale(checked, requested_locale)
        # Version 0 under a key of its own: the compiled-template caches recompile when a draft's content changes,
        # and never serve a draft for the stored versions.
        return _RenderJob(key, 0, locale, content.channels_of(localized), localized, syntax, data, draft=True)


@dataclass(frozen=True, slots=True)
class _RenderJob:
    """A render request checked and resolved, ready to render."""

    key: str
    version: int
    locale: str
    channels: Collection[int]
    content: Content
    syntax: Syntax
    data: dict[str, Any]
    draft: bool = False

    @property
    def render_args(self) -> RenderJob:
        """What TemplateProcesses renders: the compiled template's key (version and locale), content and data."""
        cache_key = ("draft", self.key, self.locale) if self.draft else (self.key, self.version, self.locale)
        return (cache_key, self.content, self.syntax, self.data)

    def response(self, rendered: Rendered) -> templates_pb2.RenderTemplateResponse:
        response = templates_pb2.RenderTemplateResponse(template_key=self.key, version=self.version, locale=self.locale)
        if common_pb2.CHANNEL_EMAIL in self.channels:
            response.email.CopyFrom(
                templates_pb2.RenderedEmail(subject=rendered.subject, body=rendered.body, html_body=rendered.html_body)
            )
        if common_pb2.CHANNEL_PUSH in self.channels:
            response.push.CopyFrom(
                templates_pb2.RenderedPush(title=rendered.push_title, body=rendered.push_body, data=rendered.push_data)
            )
        if common_pb2.CHANNEL_SMS in self.channels:
            text = measure(rendered.sms_body)
            response.sms.CopyFrom(
                templates_pb2.RenderedSms(body=rendered.sms_body, segments=text.segments, encoding=text.encoding)
            )
        if common_pb2.CHANNEL_IN_APP in self.channels:
            response.in_app.CopyFrom(
                templates_pb2.RenderedInApp(
                    title=rendered.in_app_title,
                    body=rendered.in_app_body,
                    action_url=rendered.in_app_action_url,
                    data=rendered.in_app_data,
                )
            )
        return response


_OUT_OF_TIME = Unavailable(
    "not rendered: the batch used its rendering time; ask for this one again",
    retry_after_s=0.0,
    reason="BATCH_RENDER_BUDGET_EXHAUSTED",
)


def registration(
    *, sessions: async_sessionmaker[AsyncSession], cache: Cache, processes: TemplateProcesses
) -> ServiceRegistration:
    """How to add TemplateService to a server."""
    return service_registration(
        TemplateServicer(sessions=sessions, cache=cache, processes=processes),
        templates_pb2_grpc.add_TemplateServiceServicer_to_server,
        templates_pb2.DESCRIPTOR.services_by_name["TemplateService"],
    )
