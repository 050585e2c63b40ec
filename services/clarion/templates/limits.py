"""What one render of a template may build, and how long it may take: RenderLimits and the checks behind them.

sandbox.py calls these from the Jinja environment's hooks. The rule they enforce: no value a template builds may
be larger than `max_value_size`, and an operation that can make a result much larger than its inputs (repetition,
padding, separators, format widths, powers) is checked *before* Python allocates the result, because afterwards
the memory is already gone.
"""

from __future__ import annotations

import re
import time
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any

from jinja2.runtime import Undefined
from jinja2.utils import Namespace
from markupsafe import Markup, escape


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """Bounds on one render of a template, all its parts together."""

    # 256 KiB of text is far more than any email or push needs; more is a runaway loop, or an attempt to fill memory.
    max_output_chars: int = 262_144
    # A normal template renders in well under a millisecond; one that takes a second is looping, and is holding a
    # worker that other customers' notifications are waiting for.
    max_render_s: float = 1.0
    # The most numbers range() makes, and the most steps any one operation (wordwrap's lines, lipsum's words) may
    # take in Python code between two deadline checks.
    max_range: int = 10_000
    # The largest value (characters, plus items of lists and mappings) a template may build. Without it, one
    # expression can ask for gigabytes: `'x' * 10**9`, `'a'|center(10**9)`, `[big] * 10000`.
    max_value_size: int = 262_144
    # Notification data needs no integers beyond 64 bits; `9**(9**9)` would compute for minutes and print 370
    # million digits.
    max_int_bits: int = 4_096


class LimitExceeded(Exception):
    """A render went over one of its RenderLimits; the message says which, for the template's author."""


class Disallowed(Exception):
    """A template asked for something the sandbox refuses, such as printing a function."""


# The deadline of the render running in this thread or task; None outside renders (and during compilation, when
# Jinja folds constant expressions through the same bounded filters).
_deadline: ContextVar[float | None] = ContextVar("clarion_template_deadline", default=None)


@contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Give the renders inside the block `seconds` of wall-clock time, all together."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def check_deadline() -> None:
    """Stop the render if its time is up."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise LimitExceeded("the template took too long to render")


# Sizes by exact type first: almost everything a template measures is a str or a number, and isinstance against
# abstract base classes costs about a microsecond each (measured: it made measuring 3/4 of the render time).
_TEXT_TYPES = frozenset({str, Markup, bytes, bytearray})
_NUMBER_TYPES = frozenset({bool, float, Decimal, date, time_of_day, timedelta, type(None)})
_COLLECTION_TYPES = frozenset({list, tuple, set, frozenset})


def measure(value: Any, limit: int, *, data_only: bool) -> int:
    """The size of `value`: characters of its text plus items of its collections, counting shared parts each time
    they appear (as `str()` would print them). Raises LimitExceeded as soon as the size passes `limit`, so the walk
    itself is bounded. With `data_only`, also refuses values that are not data (functions, classes, helpers)."""
    kind = type(value)
    if kind in _TEXT_TYPES and len(value) <= limit:
        return len(value)  # the common cases, without setting up the walk
    if kind is int and value.bit_length() < 64:
        return 1
    total = 0
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind in _TEXT_TYPES:
            total += len(item)
        elif kind is int:
            total += item.bit_length() // 3 + 1  # about its number of digits
        elif kind in _NUMBER_TYPES:
            total += 1
        elif kind is dict or kind in _COLLECTION_TYPES:
            total += 1 + len(item)
            if total <= limit:
                pending.extend(item.items() if kind is dict else item)
        else:
            total += _measure_other(item, pending, data_only=data_only)
        if total > limit:
            raise LimitExceeded(f"the template builds a value larger than {limit} characters")
    return total


def _measure_other(item: Any, pending: list[Any], *, data_only: bool) -> int:
    if isinstance(item, str | bytes | bytearray):
        return len(item)
    if isinstance(item, int | float | Decimal | date | time_of_day | timedelta):
        return 1
    if isinstance(item, Mapping | list | tuple | set | frozenset | KeysView | ValuesView | ItemsView):
        pending.extend(item.items() if isinstance(item, Mapping) else item)
        return 1 + len(item)
    if isinstance(item, Namespace):
        pending.append(getattr(item, "_Namespace__attrs", {}))
        return 1
    if isinstance(item, Undefined | range):
        return 1  # Undefined raises its own error when used; a range prints as `range(0, 10)`
    if isinstance(item, Iterator) and not data_only:
        return 1  # lazy filter results, whose items are measured as they are produced (see measured_items)
    if data_only:
        raise Disallowed(
            "only text, numbers, true/false, and lists or mappings of them can be printed"
            " (use |list or |join on the results of map, select and the like)"
        )
    return 1


def measured_items(items: Iterable[Any], limit: int) -> Iterator[Any]:
    """`items`, stopping once their sizes add up to more than `limit`. Lazy filters (map, select, batch...) are
    wrapped in this, because `range(10000)|map('center', 200000)|join` is small until someone consumes it."""
    total = 0
    for item in items:
        total += measure(item, limit, data_only=False)
        if total > limit:
            raise LimitExceeded(f"the template builds a value larger than {limit} characters")
        yield item


def _format_number(text: str | None, limits: RenderLimits) -> int:
    # A width or precision written in a format; one with ten digits or more is over any limit (and int() of a
    # few thousand digits is itself refused by Python).
    return int(text) if text and len(text) < 10 else (limits.max_value_size + 1 if text else 0)


def check_width(width: Any, limits: RenderLimits, what: str) -> None:
    """Refuse a width or length argument that would pad a value beyond the size limit."""
    if isinstance(width, int) and width > limits.max_value_size:
        raise LimitExceeded(f"{what} may be at most {limits.max_value_size}")


# One `%` field that can make its result wider than its value (one with a width or a precision) or that is refused
# (a key not closed), after the fields before it that cannot (`%s`, `%%`, `%(name)s`) and the text between them.
# Fields are read in order, as Python reads them, so `%%5d` is a literal percent sign and the text `5d`. The
# skipping part is possessive, so a match that fails (no such field left) fails once, at the end, instead of
# backtracking; a key stops at the next parenthesis, so a key that is never closed costs one scan to the next `(`
# or `)`. Linear in the format's length.
_WIDENING_PERCENT_FIELD = re.compile(
    r"(?:[^%]++|(?:%%)++|%(?:\([^()]*+\))?[-+ #0]*+[hlL]?(?![0-9.*(%]).?)*+"  # text, %%, fields that cannot widen
    r"%(?:\([^()]*+\)|(?P<bad_key>\())?[-+ #0]*+(?P<width>\*|[0-9]++)?(?:\.(?P<precision>\*|[0-9]*+))?",
    re.DOTALL,
)


def check_percent_format(template: str, limits: RenderLimits) -> None:
    """Refuse `%` formatting whose widths and precisions add up beyond the size limit (`'%999999999d' % 1`)."""
    if len(template) > limits.max_value_size:
        # No value a template builds is longer (measure() refuses it): a longer format is refused unread.
        raise LimitExceeded(f"a format may be at most {limits.max_value_size} characters")
    total = 0
    position = 0
    while field := _WIDENING_PERCENT_FIELD.match(template, position):
        position = field.end()
        if field["bad_key"]:
            # Python lets a key's parentheses nest (`%((a))9s` pads to 9); a template has no use for that.
            raise Disallowed("a key in a % format must be closed and may not contain parentheses")
        width, precision = field["width"], field["precision"]
        if width == "*" or precision == "*":
            raise Disallowed("'*' widths are not supported in % formatting; write the width in the format")
        # Each such field counts at least 1, which bounds the fields looked at here by the size limit.
        total += max(1, _format_number(width, limits) + _format_number(precision, limits))
        check_width(total, limits, "the widths in a format")


# Any decimal digits: str.format reads a width in Arabic-Indic digits as readily as in ASCII ones.
_DIGITS = re.compile(r"\d+")


def check_format_spec(spec: str, limits: RenderLimits) -> None:
    """Refuse a str.format spec (`{:>999999999}`, also after nested fields are filled in) that pads too far."""
    check_width(sum(_format_number(number, limits) for number in _DIGITS.findall(spec)), limits, "a format width")


# A key reference: read wherever `%(` appears, even in `%%(a)` (a literal), which only ever counts too much.
_KEY_REFERENCE = re.compile(r"%\(([^()]*)\)")


def check_percent_operation(template: str | bytes | bytearray, values: Any, limits: RenderLimits) -> None:
    """Check `template % values` before Python runs it: the widths (check_percent_format), and what it prints. A
    mapping's value is printed once per `%(key)` naming it: `('%(a)s' * 50000) % {'a': big}` would print `big`
    50,000 times."""
    text = template if isinstance(template, str) else bytes(template).decode("latin-1")
    check_percent_format(text, limits)
    measure(values, limits.max_value_size, data_only=True)
    if not isinstance(values, Mapping):
        return  # each field takes an item of its own: the result is the format plus the values, once each
    printed = len(text)
    for key in _KEY_REFERENCE.findall(text):
        name: Any = key if isinstance(template, str) else key.encode("latin-1")
        if name in values:
            printed += measure(values[name], limits.max_value_size, data_only=True)
            check_width(printed, limits, "the result of % formatting")


_SEQUENCES = (str, bytes, bytearray, list, tuple)


def check_binop(operator: str, left: Any, right: Any, limits: RenderLimits) -> None:
    """Check an intercepted operator before Python runs it: each can make a result far larger than its operands."""
    if operator == "%" and isinstance(left, str | bytes | bytearray):
        check_percent_operation(left, right, limits)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right > 0 and left.bit_length() * right > limits.max_int_bits:
            raise LimitExceeded(f"the result of ** would be larger than {limits.max_int_bits} bits")
    elif operator == "*" and isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > limits.max_int_bits:
            raise LimitExceeded(f"the result of * would be larger than {limits.max_int_bits} bits")
    elif operator == "*":
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, _SEQUENCES) and isinstance(count, int):
                check_width(len(sequence) * count, limits, "the result of *")
    elif operator == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        check_width(len(left) + len(right), limits, "the result of +")


def param(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any = None) -> Any:
    """The argument a Python function would bind to its parameter `name`, the `index`-th after the value."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def joined_items(items: Iterable[Any], separator: Any, limits: RenderLimits) -> list[Any]:
    """The items of a join, collected while checking that they and the separators between them fit the limit."""
    collected: list[Any] = []
    total = 0
    separator_size = len(escape(separator)) if isinstance(separator, str) else 1
    for item in items:
        total += measure(item, limits.max_value_size, data_only=True) + separator_size
        check_width(total, limits, "a joined text")
        collected.append(item)
    return collected


def check_replace(text: Any, old: Any, new: Any, count: Any, limits: RenderLimits) -> None:
    """Refuse a replace whose result would be too large (`('a' * 1000)|replace('a', 'a' * 1000)`)."""
    if not isinstance(text, str | bytes) or not isinstance(old, type(text)) or not isinstance(new, type(text)):
        return
    occurrences = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]  # same type, checked above
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    growth = len(escape(new)) if isinstance(new, str) else len(new)  # Markup escapes the replacement
    check_width(len(text) + occurrences * max(growth - len(old), 0), limits, "the result of replace")


def check_method_call(method: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], limits: RenderLimits) -> Any:
    """Check a call of a str, bytes or int method that can build a result far larger than its inputs, before it
    runs. Returns the arguments to call with (a join's items, collected while they were measured)."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if isinstance(owner, str | bytes | bytearray):
        if name in ("center", "ljust", "rjust", "zfill"):
            check_width(param(args, kwargs, 0, "width"), limits, f"the width of {name}()")
        elif name == "expandtabs":
            tab_size = param(args, kwargs, 0, "tabsize", 8)
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            if isinstance(tab_size, int):
                check_width(len(owner) + tabs * tab_size, limits, "the result of expandtabs()")
        elif name == "replace":
            check_replace(owner, param(args, kwargs, 0, "old"), param(args, kwargs, 1, "new"),
                          param(args, kwargs, 2, "count"), limits)  # fmt: skip
        elif name == "join" and args:
            return (joined_items(args[0], owner, limits), *args[1:])
        elif name == "translate" and args:
            # Each character may become any string of the table.
            table = args[0].values() if isinstance(args[0], Mapping) else args[0] if isinstance(args[0], list) else ()
            longest = max((len(v) for v in table if isinstance(v, str | bytes)), default=1)
            check_width(len(owner) * longest, limits, "the result of translate()")
    elif isinstance(owner, int) and name == "to_bytes":
        check_width(param(args, kwargs, 0, "length", 1), limits, "the length of to_bytes()")
    return args


def checked_result(result: Any, limits: RenderLimits) -> Any:
    """`result`, once measured; a lazy result is measured item by item as it is consumed."""
    if isinstance(result, Iterator) and not isinstance(result, str):
        return measured_items(result, limits.max_value_size)
    measure(result, limits.max_value_size, data_only=False)
    return result


_MAX_JSON_INDENT = 16
_MAX_ROUND_DIGITS = 1000


def check_filter_call(
    name: str, value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], limits: RenderLimits
) -> Any:
    """Check a filter call before it runs; returns the value to call it with (a join's items, once collected)."""
    text = value if isinstance(value, str) else ""
    if name in ("center", "truncate", "wordwrap"):
        # A width beyond what a template may build is meaningless, and center allocates whatever it is asked for.
        check_width(param(args, kwargs, 0, "length" if name == "truncate" else "width"), limits, f"{name}'s width")
    if name == "indent":
        # The indent is repeated on every line.
        width = param(args, kwargs, 0, "width", 4)
        width = len(width) if isinstance(width, str) else width
        check_width(len(text) + (len(text.splitlines()) + 1) * width, limits, "the result of indent")
    elif name == "wordwrap":
        # textwrap works line by line in Python, without deadline checks; the wrap string is repeated per line.
        width = param(args, kwargs, 0, "width", 79)
        if isinstance(width, int) and width > 0 and len(text) // width > limits.max_range:
            raise LimitExceeded(f"wordwrap may make at most {limits.max_range} lines")
        wrap = str(param(args, kwargs, 2, "wrapstring") or "\n")
        check_width(len(text) + (len(text) + 1) * len(wrap), limits, "the result of wordwrap")
    elif name == "replace":
        check_replace(value, param(args, kwargs, 0, "old"), param(args, kwargs, 1, "new"),
                      param(args, kwargs, 2, "count"), limits)  # fmt: skip
    elif name == "join":
        return joined_items(value, param(args, kwargs, 0, "d", ""), limits)
    elif name == "urlize":
        # Each link repeats target and rel, and there are at most as many links as words.
        extras = sum(len(str(param(args, kwargs, i, n) or "")) for i, n in ((2, "target"), (3, "rel")))
        check_width(len(text.split()) * extras, limits, "the result of urlize")
    elif name == "format":
        # Jinja's filter formats the value as text, whatever it is: `soft_str(value) % (kwargs or args)`.
        check_percent_operation(str(value), kwargs or args, limits)
    elif name in ("batch", "slice"):
        # batch pads its last group to the count; slice loops over it.
        check_width(param(args, kwargs, 0, "linecount" if name == "batch" else "slices"), limits, f"{name}'s count")
    elif name == "round" and abs(param(args, kwargs, 0, "precision", 0)) > _MAX_ROUND_DIGITS:
        # Rounding an int to -n digits computes 10**n.
        raise LimitExceeded(f"round's precision may be at most {_MAX_ROUND_DIGITS}")
    elif name == "sum" and not isinstance(param(args, kwargs, 1, "start", 0), int | float | Decimal):
        # Adding lists (start=[]) copies the total at every step: quadratic, and not what sum is for.
        raise Disallowed("sum adds numbers only")
    elif name == "tojson":
        # The indent is repeated on every line, times the depth.
        indent = param(args, kwargs, 0, "indent")
        if (indent if isinstance(indent, int) else len(str(indent or ""))) > _MAX_JSON_INDENT:
            raise LimitExceeded(f"tojson's indent may be at most {_MAX_JSON_INDENT}")
    return value
