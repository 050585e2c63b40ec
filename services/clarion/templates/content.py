"""A template's content: validation, its stored form, and the locale to render in."""

from __future__ import annotations

import re
from typing import Any

import langcodes

from clarion.core.errors import InvalidArgument
from clarion.core.validation import Violations, has_line_break_or_nul, normalize_language_tag
from clarion.templates import rendering
from clarion.templates.braces import MAX_SOURCE_CHARS
from clarion.templates.models import TemplateRowPair
from clarion.templates.rendering import Content, Syntax, TemplateSyntaxError, compile_content, detect_syntax
from clarion.v1 import common_pb2, templates_pb2

_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
MAX_PART_CHARS = MAX_SOURCE_CHARS
MAX_PUSH_DATA_ENTRIES = 50
PARTS = (
    "subject",
    "body",
    "html_body",
    "push_title",
    "push_body",
    "sms_body",
    "in_app_title",
    "in_app_body",
    "in_app_action_url",
)
MAP_PARTS = rendering.MAP_PARTS
_SYNTAX_NAMES = {
    Syntax.JINJA: templates_pb2.TEMPLATE_SYNTAX_JINJA,
    Syntax.BRACES: templates_pb2.TEMPLATE_SYNTAX_BRACES,
}
_SYNTAX_BY_ENUM = {value: syntax for syntax, value in _SYNTAX_NAMES.items()}


def check_key(key: str, field: str = "template_key") -> str:
    """A template key: a slug starting with a letter."""
    if not key:
        raise InvalidArgument.for_field(field, "is required")
    if not _KEY.match(key):
        raise InvalidArgument.for_field(field, "must be 1 to 63 letters, digits, '_' or '-', starting with a letter")
    return key


def channels_of(content: Content) -> list[common_pb2.Channel.ValueType]:
    """The channels a locale's content can deliver on."""
    channels: list[common_pb2.Channel.ValueType] = []
    if content.subject or content.body or content.html_body:
        channels.append(common_pb2.CHANNEL_EMAIL)
    if content.push_title or content.push_body:
        channels.append(common_pb2.CHANNEL_PUSH)
    if content.sms_body:
        channels.append(common_pb2.CHANNEL_SMS)
    if content.in_app_title or content.in_app_body:
        channels.append(common_pb2.CHANNEL_IN_APP)
    return channels


def content_from_proto(message: templates_pb2.Template | templates_pb2.TemplateContent) -> Content:
    """The content of the top level of a Template, or of one of its localizations."""
    fields: dict[str, Any] = {part: getattr(message, part) for part in PARTS}
    fields.update({name: tuple(sorted(getattr(message, name).items())) for name in MAP_PARTS})
    return Content(**fields)


def content_to_json(content: Content) -> dict[str, Any]:
    """The stored (JSONB) form of one locale's content."""
    stored: dict[str, Any] = {part: getattr(content, part) for part in PARTS if getattr(content, part)}
    for name in MAP_PARTS:
        if getattr(content, name):
            stored[name] = dict(getattr(content, name))
    return stored


def content_from_json(stored: dict[str, Any]) -> Content:
    """One locale's content from its stored form."""
    fields: dict[str, Any] = {part: str(stored.get(part, "")) for part in PARTS}
    fields.update(
        {name: tuple(sorted((str(k), str(v)) for k, v in stored.get(name, {}).items())) for name in MAP_PARTS}
    )
    return Content(**fields)


def _check_content(content: Content, prefix: str, violations: Violations) -> None:
    for part in PARTS:
        value = getattr(content, part)
        violations.check(len(value) <= MAX_PART_CHARS, prefix + part, f"must be at most {MAX_PART_CHARS} characters")
        violations.check("\x00" not in value, prefix + part, "must not contain NUL characters")
    violations.check(
        "\r" not in content.subject and "\n" not in content.subject, prefix + "subject", "must be one line"
    )
    for name in MAP_PARTS:
        entries = getattr(content, name)
        violations.check(
            len(entries) <= MAX_PUSH_DATA_ENTRIES, prefix + name, f"must have at most {MAX_PUSH_DATA_ENTRIES} entries"
        )
        for key, value in entries:
            field = f"{prefix}{name}.{key}"
            violations.check(bool(key) and not has_line_break_or_nul(key) and len(key) <= 64, field, "bad key")
            violations.check(
                len(value) <= 4096 and "\x00" not in value, field, "must be at most 4096 characters, no NUL"
            )
    has_email_part = bool(content.body or content.html_body)
    violations.check(bool(content.subject) or not has_email_part, prefix + "subject", "is required with an email body")
    violations.check(
        has_email_part or not content.subject, prefix + "body", "an email needs a body or an html_body with its subject"
    )


def validate_template(
    template: templates_pb2.Template, prefix: str = "template."
) -> tuple[str, dict[str, Content], Syntax]:
    """Check a whole template but compile it; return its default locale, its content by locale and its syntax.
    INVALID_ARGUMENT names every bad field. Compiling is first_syntax_error's (in a worker process for Jinja)."""
    violations = Violations()
    default_locale = normalize_language_tag(template.default_locale or "en", prefix + "default_locale", violations)
    violations.check(len(template.description) <= 1000, prefix + "description", "must be at most 1000 characters")
    violations.check("\x00" not in template.description, prefix + "description", "must not contain NUL characters")
    default = content_from_proto(template)
    _check_content(default, prefix, violations)
    if not channels_of(default):
        violations.add(
            prefix + "subject",
            "a template needs content for a channel: email (subject and body), push, sms_body or in-app",
        )
    contents = {default_locale: default}
    for tag, localized in sorted(template.localizations.items()):
        field = f'{prefix}localizations["{tag}"]'
        locale = normalize_language_tag(tag, field, violations)
        if not locale:
            continue
        if locale in contents:
            violations.add(field, f"duplicates locale {locale} (the default locale's content is the top level)")
            continue
        content = content_from_proto(localized)
        _check_content(content, field + ".", violations)
        violations.check(
            channels_of(content) == channels_of(default),
            field,
            "must have content for the same channels as the default",
        )
        contents[locale] = content
    violations.raise_if_any()
    return default_locale, contents, _SYNTAX_BY_ENUM.get(template.syntax) or _detect(contents)


def first_syntax_error(contents: dict[str, Content], syntax: Syntax) -> tuple[str, TemplateSyntaxError] | None:
    """Compile every locale's content; the first locale that does not compile, with its error, or None."""
    for locale, content in contents.items():
        try:
            compile_content(content, syntax)
        except TemplateSyntaxError as error:
            return locale, error
    return None


def syntax_error(
    locale: str, error: TemplateSyntaxError, *, default_locale: str, prefix: str = "template."
) -> InvalidArgument:
    """A template that does not compile, as INVALID_ARGUMENT naming the field (part and locale) and the line."""
    field = prefix if locale == default_locale else f'{prefix}localizations["{locale}"].'
    where = f" (line {error.line})" if error.line else ""
    return InvalidArgument.for_field(
        (field + error.part).rstrip("."),
        f"does not compile{where}: {error.description}",
        reason="TEMPLATE_SYNTAX_ERROR",
    )


def _detect(contents: dict[str, Content]) -> Syntax:
    return Syntax.JINJA if any(detect_syntax(c) is Syntax.JINJA for c in contents.values()) else Syntax.BRACES


AUTO_SYNTAX = "auto"


def stored_syntax(template: templates_pb2.Template) -> str:
    """The syntax to store: the one asked for, or "auto" to detect it from each version's (immutable) content —
    so a later version that starts using `{{` becomes Jinja2 without being told."""
    chosen = _SYNTAX_BY_ENUM.get(template.syntax)
    return chosen.value if chosen else AUTO_SYNTAX


def effective_syntax(stored: str, contents: dict[str, Content]) -> Syntax:
    """The syntax a stored version renders with."""
    return _detect(contents) if stored == AUTO_SYNTAX else Syntax(stored)


def template_to_proto(pair: TemplateRowPair) -> templates_pb2.Template:
    """A stored version as the API shows it."""
    head, version = pair
    contents = {locale: content_from_json(stored) for locale, stored in version.content.items()}
    syntax = effective_syntax(version.syntax, contents)
    default = contents.pop(version.default_locale)
    template = templates_pb2.Template(
        name=f"templates/{head.key}",
        template_key=head.key,
        version=version.version,
        description=version.description,
        **_content_fields(default),
        default_locale=version.default_locale,
        syntax=_SYNTAX_NAMES[syntax],
        channels=channels_of(default),
    )
    for locale, content in contents.items():
        template.localizations[locale].CopyFrom(templates_pb2.TemplateContent(**_content_fields(content)))
    template.create_time.FromDatetime(version.created_at)
    if head.deleted_at is not None:
        template.delete_time.FromDatetime(head.deleted_at)
    return template


def _content_fields(content: Content) -> dict[str, Any]:
    """One locale's content as the keyword arguments of Template and TemplateContent (which share the names)."""
    return {
        **{part: getattr(content, part) for part in PARTS},
        **{name: dict(getattr(content, name)) for name in MAP_PARTS},
    }


def resolve_locale(template: templates_pb2.Template, requested: str) -> tuple[str, Content]:
    """The content to render for `requested`: the exact tag, then its language (pt-BR → pt), then the default."""
    candidates = []
    if requested:
        tag = langcodes.Language.get(requested)
        candidates = [str(langcodes.standardize_tag(requested)), tag.language or ""]
    for candidate in candidates:
        if candidate in template.localizations:
            return candidate, content_from_proto(template.localizations[candidate])
        if candidate == template.default_locale:
            break
    return template.default_locale, content_from_proto(template)


def syntax_of(template: templates_pb2.Template) -> Syntax:
    """A stored template's syntax."""
    return _SYNTAX_BY_ENUM[template.syntax]
