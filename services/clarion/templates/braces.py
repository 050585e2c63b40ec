"""The seed system's brace syntax: `{name}` is a variable, `{{` and `}}` are literal braces, nothing else.

It is deliberately tiny: no attributes, no indexes, no format specs, no expressions. A brace template can only
copy values into text, so it needs no sandbox and no time budget, and it is linear in its input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from markupsafe import escape

# One alternation scanned left to right: a doubled brace wins over a variable, so `{{name}}` is the literal text
# `{name}` (as in Python's str.format), and any brace left over is an error rather than guessed at.
# The longest template part (templates/content.py checks it when a template is saved).
MAX_SOURCE_CHARS = 64 * 1024
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


class BraceSyntaxError(ValueError):
    """A brace that is neither a variable nor doubled. `line` is 1-based."""

    def __init__(self, line: int, description: str) -> None:
        super().__init__(f"line {line}: {description}")
        self.line = line
        self.description = description


def format_value(value: Any) -> str:
    """How a data value reads in a notification, in both syntaxes.

    Data arrives as JSON, so it prints as JSON scalars do: `None` is empty (a top-level placeholder that is null is
    refused before rendering, rendering.NullVariablesError; a null inside a value, such as a list item, should leave
    no `None` in a customer's inbox), booleans are `true`/`false`, and integral floats (JSON has only floats once
    they have been through `google.protobuf.Struct`) lose their `.0`. Everything else is `str(value)`.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class _Piece:
    text: str
    name: str | None  # the variable that follows `text`, if any


class BraceTemplate:
    """A parsed brace template: literal text and variable names, in order."""

    def __init__(self, source: str) -> None:
        if len(source) > MAX_SOURCE_CHARS:
            # Checked before parsing, whose time grows with the source (one step per brace).
            raise BraceSyntaxError(1, f"a template part may be at most {MAX_SOURCE_CHARS} characters")
        self._pieces = tuple(_parse(source))
        self.variables = frozenset(piece.name for piece in self._pieces if piece.name is not None)

    def generate(self, data: Mapping[str, Any], *, escape_html: bool) -> Iterator[str]:
        """Yield the output piece by piece; every name in `variables` must be a key of `data`."""
        for piece in self._pieces:
            yield piece.text
            if piece.name is not None:
                text = format_value(data[piece.name])
                yield str(escape(text)) if escape_html else text


def _parse(source: str) -> Iterator[_Piece]:
    literal: list[str] = []
    position = 0
    for match in _TOKEN.finditer(source):
        literal.append(source[position : match.start()])
        position = match.end()
        brace = match.group(0)
        if match.group(1) is not None:
            yield _Piece("".join(literal), match.group(1))
            literal = []
        elif brace in ("{{", "}}"):
            literal.append(brace[0])
        else:
            line = source.count("\n", 0, match.start()) + 1
            raise BraceSyntaxError(line, _describe_stray(brace == "}", source, match.start()))
    literal.append(source[position:])
    yield _Piece("".join(literal), None)


def _describe_stray(closing_brace: bool, source: str, start: int) -> str:
    if closing_brace:
        return "unmatched '}': write '}}' for a literal brace"
    closing = source.find("}", start)
    if closing == -1:
        return "unclosed '{': write '{{' for a literal brace, or {name} for a variable"
    inside = source[start + 1 : closing]
    shown = f"'{{{inside}}}'" if len(inside) <= 40 and "\n" not in inside else "this '{'"
    return f"{shown} is not a variable: a variable is {{name}} with letters, digits and _; '{{{{' is a literal brace"
