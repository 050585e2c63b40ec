"""Rendering notification templates: compile once, render many times, in either of two syntaxes.

A template's content in one locale has up to five text parts (subject, plain body, HTML body, push title and
body) plus push data values. `compile_content` compiles them all, so a bad template is refused when it is
saved; `CompiledTemplate.render` fills them with data. Values are always data, never templates, and they are
HTML-escaped in the HTML body only. Brace templates (`{name}`, the seed system's) are parsed in braces.py;
Jinja templates run in the sandbox of sandbox.py, within the RenderLimits of limits.py. Every failure is a
TemplateRenderError whose message is safe to show a client.
"""

from __future__ import annotations

import enum
import re
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import jinja2

from clarion.templates.braces import BraceSyntaxError, BraceTemplate
from clarion.templates.limits import Disallowed, LimitExceeded, RenderLimits, time_budget
from clarion.templates.sandbox import ClarionSandbox, compile_template, template_line

__all__ = [
    "CompiledTemplate",
    "CompiledTemplateCache",
    "Content",
    "MissingVariablesError",
    "RenderError",
    "RenderLimitError",
    "RenderLimits",
    "Rendered",
    "Syntax",
    "TemplateRenderError",
    "TemplateSyntaxError",
    "compile_content",
    "detect_syntax",
    "normalize_data",
]


class Syntax(enum.Enum):
    """How a template marks its variables."""

    JINJA = "jinja"
    BRACES = "braces"


@dataclass(frozen=True, slots=True)
class Content:
    """The content of a template in one locale. Empty parts are not rendered (they render as "")."""

    subject: str = ""
    body: str = ""  # plain-text email body
    html_body: str = ""
    push_title: str = ""
    push_body: str = ""
    push_data: tuple[tuple[str, str], ...] = ()  # (key, value template) pairs; a tuple so that Content is hashable
    sms_body: str = ""
    in_app_title: str = ""
    in_app_body: str = ""
    in_app_action_url: str = ""
    in_app_data: tuple[tuple[str, str], ...] = ()  # as push_data


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered template: subject and push title on one line each, push data by key."""

    subject: str
    body: str
    html_body: str
    push_title: str
    push_body: str
    push_data: dict[str, str]
    sms_body: str = ""
    in_app_title: str = ""
    in_app_body: str = ""
    in_app_action_url: str = ""
    in_app_data: dict[str, str] = field(default_factory=dict)


class TemplateRenderError(Exception):
    """Base of every failure to compile or render a template. `part` names the part the error is about
    ("subject", "html_body", "push_data.url"), or is "" when it is about none in particular. `str(error)` is safe
    to show a client: it never holds Python internals, tracebacks or paths."""

    def __init__(self, message: str, *, part: str = "") -> None:
        super().__init__(message)
        self.part = part

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross from the template worker processes (isolation.py). Pickle's default rebuilds an exception
        # by calling its class with `args`, which these keyword-only constructors refuse: rebuild it by attribute.
        return (_restore_error, (type(self), str(self), dict(self.__dict__)))


def _restore_error(kind: type[TemplateRenderError], message: str, state: dict[str, Any]) -> TemplateRenderError:
    error = kind.__new__(kind)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class TemplateSyntaxError(TemplateRenderError):
    """A part does not compile. `line` is 1-based, or None when the error is not on one line."""

    def __init__(self, *, part: str, line: int | None, description: str) -> None:
        super().__init__(f"{_where(part, line)}: {description}", part=part)
        self.line = line
        self.description = description


class MissingVariablesError(TemplateRenderError):
    """The data lacks variables the template reads; `names` lists every one of them, in all parts, sorted."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(set(names))
        super().__init__("missing template variables: " + ", ".join(self.names))


class NullVariablesError(TemplateRenderError):
    """Variables the template prints are null in the data; `names` lists every one of them, sorted. A null is
    refused as a missing variable is: a client whose JSON mapping dropped a value (protobuf's Value kinds lost by a
    client library) would otherwise send a message with blanks in it."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(set(names))
        super().__init__("null template variables: " + ", ".join(self.names))


class RenderLimitError(TemplateRenderError):
    """Rendering went over a RenderLimits bound: output too large, too slow, or one operation too big.
    `line` is the template line that was running, when known."""

    def __init__(self, description: str, *, part: str, line: int | None = None) -> None:
        super().__init__(f"{_where(part, line)}: {description}", part=part)
        self.line = line


class RenderError(TemplateRenderError):
    """Any other failure while rendering: an undefined attribute, an operation the sandbox blocks, a type error,
    recursion. `line` is the template line that was running, when known."""

    def __init__(self, description: str, *, part: str, line: int | None = None) -> None:
        super().__init__(f"{_where(part, line)}: {description}", part=part)
        self.line = line


def _where(part: str, line: int | None) -> str:
    return f"{part}, line {line}" if line else part


def detect_syntax(content: Content) -> Syntax:
    """JINJA if any part (push data values included) contains `{{` or `{%`, else BRACES."""
    texts = (*_text_parts(content).values(), *(value for name in MAP_PARTS for _, value in getattr(content, name)))
    return Syntax.JINJA if any("{{" in text or "{%" in text for text in texts) else Syntax.BRACES


def normalize_data(value: Any) -> Any:
    """Data as it came through `google.protobuf.Struct`, with integral floats made ints again (JSON numbers are
    all floats there), so `{new_updates}` with 10 renders `10`, not `10.0`. Everything else is left as it is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: normalize_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalize_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(normalize_data(item) for item in value)
    return value


class _Part(Protocol):
    """One compiled part, in either syntax."""

    variables: frozenset[str]

    def generate(self, data: Mapping[str, Any]) -> Iterator[str]: ...

    def line_of(self, error: BaseException) -> int | None: ...


class _BracePart:
    def __init__(self, source: str, *, escape_html: bool) -> None:
        self._template = BraceTemplate(source)
        self._escape_html = escape_html
        self.variables = self._template.variables

    def generate(self, data: Mapping[str, Any]) -> Iterator[str]:
        return self._template.generate(data, escape_html=self._escape_html)

    def line_of(self, error: BaseException) -> int | None:
        return None


class _JinjaPart:
    def __init__(self, source: str, env: ClarionSandbox) -> None:
        self._template, self.variables = compile_template(env, source)

    def generate(self, data: Mapping[str, Any]) -> Iterator[str]:
        return self._template.generate(data)

    def line_of(self, error: BaseException) -> int | None:
        return template_line(self._template, error)


# The HTML body is escaped (autoescape in Jinja, markupsafe.escape of each value in braces); the other parts are
# plain text that no browser will read as HTML, where `&amp;` would be a visible bug.
_HTML_PART = "html_body"
# Parts that become one-line headers (an email subject, a push title): a line break in them would end the header.
_ONE_LINE_PARTS = ("subject", "push_title", "in_app_title", "in_app_action_url")
# The parts that are maps of key to value template, each value rendered as a part of its own ("push_data.url").
MAP_PARTS = ("push_data", "in_app_data")
_LINE_BREAKS = re.compile(r"[\r\n]+")


class CompiledTemplate:
    """A template compiled in all its parts, ready to render any number of times, from any thread."""

    def __init__(
        self, syntax: Syntax, parts: dict[str, _Part], map_keys: dict[str, tuple[str, ...]], limits: RenderLimits
    ) -> None:
        self.syntax = syntax
        self._parts = parts
        self._map_keys = map_keys  # each map part's keys, in order
        self._limits = limits
        self._variables = frozenset().union(*(part.variables for part in parts.values()))

    def variables(self) -> frozenset[str]:
        """The top-level variable names the template reads (for Jinja, those Jinja can see without running it)."""
        return self._variables

    def render(self, data: Mapping[str, Any]) -> Rendered:
        """Render every part with `data`. Raises MissingVariablesError (naming every missing variable), then
        NullVariablesError (every one that is null), before rendering anything, then RenderLimitError or RenderError
        for the first part that fails."""
        missing = self._variables - data.keys()
        if missing:
            raise MissingVariablesError(missing)
        null = [name for name in self._variables if data[name] is None]
        if null:
            raise NullVariablesError(null)
        texts: dict[str, str] = {}
        room = self._limits.max_output_chars
        with time_budget(self._limits.max_render_s):
            for name, part in self._parts.items():
                texts[name] = _render_part(name, part, data, room, self._limits)
                room -= len(texts[name])
        for name in _ONE_LINE_PARTS:
            if name in texts:
                texts[name] = _LINE_BREAKS.sub(" ", texts[name])
        return Rendered(
            subject=texts.get("subject", ""),
            body=texts.get("body", ""),
            html_body=texts.get(_HTML_PART, ""),
            push_title=texts.get("push_title", ""),
            push_body=texts.get("push_body", ""),
            push_data=self._map("push_data", texts),
            sms_body=texts.get("sms_body", ""),
            in_app_title=texts.get("in_app_title", ""),
            in_app_body=texts.get("in_app_body", ""),
            in_app_action_url=texts.get("in_app_action_url", ""),
            in_app_data=self._map("in_app_data", texts),
        )

    def _map(self, name: str, texts: dict[str, str]) -> dict[str, str]:
        return {key: texts.get(f"{name}.{key}", "") for key in self._map_keys.get(name, ())}


def _render_part(name: str, part: _Part, data: Mapping[str, Any], room: int, limits: RenderLimits) -> str:
    pieces: list[str] = []
    try:
        # Streamed and counted piece by piece, so a template that prints too much stops there, not after the
        # whole output has been built in memory.
        for piece in part.generate(data):
            room -= len(piece)
            if room < 0:
                raise LimitExceeded(f"the rendered template is longer than {limits.max_output_chars} characters")
            pieces.append(piece)
    except Exception as error:  # anything a template does can fail, and the client gets a typed error
        raise _render_failure(name, part.line_of(error), error) from error
    return "".join(pieces)


# Python's and Jinja's messages are fine for template authors ("'dict object' has no attribute 'name'"), except
# for object reprs (`<function generate_lorem_ipsum at 0x7f...>`), which show internals and addresses, and the
# module paths of class names (`jinja2.runtime.Macro object`).
_REPR = re.compile(r"<[^<>]*>")
# Matched only where a dotted path starts: otherwise each dot of a long path starts the scan of the rest again.
_MODULE_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w* object\b)")
_MESSAGE_CHARS = 300
# A message can quote template data of any length ("'dict object' has no attribute '<64 KB value>'"), and
# _MODULE_PATH backtracks over every dotted run: it sees only as much as could survive into the answer.
_CLEANED_CHARS = 4 * _MESSAGE_CHARS


def client_safe_message(message: str) -> str:
    """An error message for a template's author: no object reprs or module paths, at most 300 characters."""
    message = _MODULE_PATH.sub("", _REPR.sub("object", message[:_CLEANED_CHARS]))
    return message if len(message) <= _MESSAGE_CHARS else message[: _MESSAGE_CHARS - 3] + "..."


def _render_failure(part: str, line: int | None, error: Exception) -> TemplateRenderError:
    if isinstance(error, LimitExceeded):
        return RenderLimitError(str(error), part=part, line=line)
    if isinstance(error, MemoryError):
        return RenderLimitError("the template needs too much memory", part=part, line=line)
    if isinstance(error, RecursionError):
        return RenderError("the template recurses too deeply", part=part, line=line)
    if isinstance(error, jinja2.exceptions.SecurityError | Disallowed):
        return RenderError(f"not allowed: {client_safe_message(str(error))}", part=part, line=line)
    if isinstance(error, jinja2.TemplateError | TypeError | ValueError | ArithmeticError | LookupError):
        return RenderError(client_safe_message(str(error)) or type(error).__name__, part=part, line=line)
    return RenderError("the template failed to render", part=part, line=line)


def _text_parts(content: Content) -> dict[str, str]:
    return {
        "subject": content.subject,
        "body": content.body,
        _HTML_PART: content.html_body,
        "push_title": content.push_title,
        "push_body": content.push_body,
        "sms_body": content.sms_body,
        "in_app_title": content.in_app_title,
        "in_app_body": content.in_app_body,
        "in_app_action_url": content.in_app_action_url,
    }


@lru_cache(maxsize=16)
def _environment(limits: RenderLimits, *, autoescape: bool) -> ClarionSandbox:
    # Environments hold no per-render state, so one per (limits, autoescape) serves every template and thread.
    return ClarionSandbox(limits, autoescape=autoescape)


def compile_content(
    content: Content, syntax: Syntax | None = None, *, limits: RenderLimits | None = None
) -> CompiledTemplate:
    """Compile every non-empty part of `content` in `syntax` (detected when None). Raises TemplateSyntaxError
    naming the first part that does not compile, and the line."""
    syntax = syntax or detect_syntax(content)
    limits = limits or RenderLimits()
    sources = _text_parts(content)
    for map_name in MAP_PARTS:
        for key, value in getattr(content, map_name):
            if f"{map_name}.{key}" in sources:
                raise TemplateSyntaxError(part=f"{map_name}.{key}", line=None, description="the key appears twice")
            sources[f"{map_name}.{key}"] = value
    parts: dict[str, _Part] = {}
    for name, source in sources.items():
        if source:
            parts[name] = _compile_part(name, source, syntax, limits)
    map_keys = {name: tuple(key for key, _ in getattr(content, name)) for name in MAP_PARTS}
    return CompiledTemplate(syntax, parts, map_keys, limits)


def _compile_part(name: str, source: str, syntax: Syntax, limits: RenderLimits) -> _Part:
    try:
        if syntax is Syntax.BRACES:
            return _BracePart(source, escape_html=name == _HTML_PART)
        return _JinjaPart(source, _environment(limits, autoescape=name == _HTML_PART))
    except BraceSyntaxError as error:
        raise TemplateSyntaxError(part=name, line=error.line, description=error.description) from error
    except jinja2.TemplateSyntaxError as error:
        description = client_safe_message(error.message or "invalid syntax")
        raise TemplateSyntaxError(part=name, line=error.lineno, description=description) from error
    except jinja2.TemplateError as error:
        # Jinja evaluates constant expressions while compiling, and `(1).keys or x` fails there, for good.
        raise TemplateSyntaxError(part=name, line=None, description=client_safe_message(str(error))) from error
    except (RecursionError, MemoryError, SyntaxError) as error:
        # Jinja's parser, or Python compiling what Jinja generated, gives up on very deep nesting (Python allows
        # 20 nested blocks, so 21 nested for loops).
        raise TemplateSyntaxError(part=name, line=None, description="the template is nested too deeply") from error


@dataclass(frozen=True, slots=True)
class _CacheEntry:
    content: Content
    syntax: Syntax | None
    compiled: CompiledTemplate


class CompiledTemplateCache:
    """Compiled templates by a key such as (template_key, version, locale), least recently used evicted first.
    An entry is reused only if its content and syntax are still the ones asked for, so a key reused for other
    content (a draft edited in place) cannot render stale text."""

    def __init__(self, max_entries: int = 1024, *, limits: RenderLimits | None = None) -> None:
        self._max_entries = max_entries
        self._limits = limits
        self._entries: OrderedDict[Hashable, _CacheEntry] = OrderedDict()
        self._lock = threading.Lock()  # renders may run in worker threads

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_compile(self, key: Hashable, content: Content, syntax: Syntax | None) -> CompiledTemplate:
        """The compiled template for `key`, compiling (and caching) it if needed; raises TemplateSyntaxError."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.content == content and entry.syntax is syntax:
                self._entries.move_to_end(key)
                return entry.compiled
        # Compiled outside the lock: it takes milliseconds, and two threads compiling one template is harmless.
        compiled = compile_content(content, syntax, limits=self._limits)
        with self._lock:
            self._entries[key] = _CacheEntry(content, syntax, compiled)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return compiled
