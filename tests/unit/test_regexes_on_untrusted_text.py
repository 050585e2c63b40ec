"""Every regular expression that runs over text a client controls, against the inputs that make a backtracking regex
super-linear, at 64 KB and 1 MB.

Python's `re` holds the GIL for a whole match, so one quadratic pattern over a 64 KB value froze the event loop for
seconds, from a thread as much as from the loop itself. The bound is CPU time of this thread (`thread_time`), which
other work on a busy machine does not inflate; a linear scan of 1 MB takes a few milliseconds, a quadratic one
hours.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest

from clarion.core.logging import redact_text
from clarion.templates.braces import BraceSyntaxError, BraceTemplate
from clarion.templates.limits import Disallowed, LimitExceeded, RenderLimits, check_format_spec, check_percent_format
from clarion.templates.rendering import client_safe_message

SIZES = {"64KB": 64 * 1024, "1MB": 1024 * 1024}
CPU_BUDGET_S = 0.05
# Generous limits, so that the scans run to the end of the text instead of stopping at the first width.
_UNLIMITED = RenderLimits(max_value_size=10**12)


def _percent(text: str) -> None:
    # With the real limits: a format longer than any value a template may build is refused before it is read.
    check_percent_format(text, RenderLimits())


def _format_spec(text: str) -> None:
    check_format_spec(text, _UNLIMITED)


def _braces(text: str) -> None:
    "".join(BraceTemplate(text).generate({"a": "x"}, escape_html=False))


# (what runs the regex, a name for the payload, the payload made to a size)
CASES: list[tuple[Callable[[str], object], str, Callable[[int], str]]] = [
    (redact_text, "email local part with no @", lambda n: "a" * n),
    (redact_text, "email @ after @", lambda n: "a@" * (n // 2)),
    (redact_text, "email dotted domain with no top level", lambda n: "x@" + "a." * (n // 2) + "1"),
    (redact_text, "email dots and pluses", lambda n: "a.+" * (n // 3)),
    (redact_text, "phone digits", lambda n: "+1" + "2" * n),
    (redact_text, "api key with no second underscore", lambda n: "clr_" + "a" * n),
    (redact_text, "api keys back to back", lambda n: "clr_a-" * (n // 6)),
    (redact_text, "bearer with only spaces", lambda n: "bearer" + " " * n),
    (redact_text, "bearer repeated", lambda n: "bearer " * (n // 7)),
    (client_safe_message, "dotted path with no object", lambda n: "a." * (n // 2)),
    (client_safe_message, "dotted path then object", lambda n: "a." * (n // 2) + "b object"),
    (client_safe_message, "unclosed angle brackets", lambda n: "<" * n),
    (client_safe_message, "angle brackets and dots", lambda n: "<a." * (n // 3)),
    (_percent, "keys never closed", lambda n: "%(" * (n // 2)),
    (_percent, "one key nested deeply", lambda n: "%" + "(" * (n // 2) + ")" * (n // 2)),
    (_percent, "a key left open at the end", lambda n: "%(a)s" * (n // 10) + "%(" * (n // 4)),
    (_percent, "percent signs", lambda n: "%" * n),
    (_percent, "fields that cannot widen", lambda n: "%s" * (n // 2)),
    (_percent, "flags without a conversion", lambda n: "%" + "0" * n),
    (_format_spec, "digits", lambda n: "9" * n),
    (_braces, "unclosed placeholders", lambda n: "{a" * (n // 2)),
    (_braces, "a name never closed", lambda n: "{" + "a" * n),
    (_braces, "braces", lambda n: "{" * n),
]


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize(("scan", "payload"), [(c[0], c[2]) for c in CASES], ids=[c[1] for c in CASES])
def test_a_hostile_text_is_scanned_in_linear_time(
    scan: Callable[[str], object], payload: Callable[[int], str], size: int
) -> None:
    text = payload(size)
    started = time.thread_time()
    with contextlib.suppress(LimitExceeded, Disallowed, BraceSyntaxError):  # refusing the text is an answer too
        scan(text)
    spent_s = time.thread_time() - started
    assert spent_s < CPU_BUDGET_S, f"{spent_s * 1000:.0f} ms of CPU for {size} characters"
