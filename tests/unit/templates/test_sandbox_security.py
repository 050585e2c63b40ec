"""Hostile templates and hostile data: server-side template injection payloads must print inert text or fail with
a TemplateRenderError, run no code and read no file (proved with an audit hook), and template bombs must fail
with RenderLimitError or RenderError instead of hanging or filling memory."""

from __future__ import annotations

import sys
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from markupsafe import escape

from clarion.templates.rendering import (
    Content,
    RenderError,
    RenderLimitError,
    Syntax,
    TemplateRenderError,
    TemplateSyntaxError,
    compile_content,
)


class _AuditLog:
    """Audit events raised by this thread while recording. Audit hooks cannot be removed, so one is installed
    per process, when this module is imported, and records only inside `recording()`."""

    def __init__(self) -> None:
        self._thread: int | None = None
        self._events: list[str] = []

    def hook(self, event: str, _args: tuple[object, ...]) -> None:
        if self._thread == threading.get_ident():
            self._events.append(event)

    @contextmanager
    def recording(self) -> Iterator[list[str]]:
        self._events = []
        self._thread = threading.get_ident()
        try:
            yield self._events
        finally:
            self._thread = None


AUDIT = _AuditLog()
sys.addaudithook(AUDIT.hook)

# Events that mean code ran or the outside world was touched.
_FORBIDDEN_EVENTS = {"open", "exec", "compile", "import", "code.__new__", "builtins.input", "sys._getframe"}
_FORBIDDEN_PREFIXES = ("os.", "subprocess.", "ctypes.", "socket.", "shutil.", "marshal.", "pickle.", "urllib.")


def forbidden(events: list[str]) -> list[str]:
    """The events in `events` that no render may cause."""
    return [e for e in events if e in _FORBIDDEN_EVENTS or e.startswith(_FORBIDDEN_PREFIXES)]


# What Python internals look like when they leak into output or messages.
_LEAKS = (
    *("<class", "<function", "<built-in", "<bound", "<module", "<Macro", "<TemplateReference", "<generator"),
    *(" at 0x", "jinja2.", "site-packages", ".py", "Traceback", "/usr", "/etc", "'__builtins__'", "'__name__'"),
    *("Cycler object", "uid="),
)


def assert_no_leak(text: str) -> None:
    """Fail if `text` shows any Python internals."""
    leaked = [marker for marker in _LEAKS if marker in text]
    assert not leaked, f"{leaked} in {text!r}"


DATA = {"x": "text", "n": 1, "items": ["a", "b"]}

SSTI_PAYLOADS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c.__name__ }}{% endfor %}",
    "{{ {}.__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum.__globals__['os'].system('id') }}",
    "{{ self._TemplateReference__context }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self.__dict__ }}",
    "{{ request }}",
    "{{ request.application.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ context }}",
    "{{ environment }}",
    "{{ __builtins__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ (''|attr('__class__')|attr('__mro__'))[1] }}",
    "{{ ''|attr('__cla' ~ 'ss__') }}",
    "{{ ''|attr(['__cla', 'ss__']|join) }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ x|attr('__class__')|attr('__base__') }}",
    "{{ [x]|map('attr', '__class__')|list }}",
    "{{ x.__class__ }}",
    "{{ x.__class__.__init__.__globals__ }}",
    "{{ x.__getattribute__('__class__') }}",
    "{{ n.real.__class__ }}",
    "{{ '{0.__class__}'.format(x) }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ '{0!r}'.format(cycler) }}",
    "{{ '{0}'.format_map({'0': joiner}) }}",
    "{{ '%s'|format(cycler) }}",
    "{{ '%s'|format(x.__class__) }}",
    "{{ '%s' % lipsum }}",
    "{{ '%r' % (namespace,) }}",
    "{{ ''.format }}",
    "{% set f = ''.format %}{{ f('{0.__class__}', x) }}",
    "{% set c = ''.__class__ %}{{ c.__subclasses__() }}",
    "{% set ns = namespace() %}{% set ns.y = cycler %}{{ ns.y.__init__ }}",
    "{% set ns = namespace(f=lipsum) %}{{ ns }}",
    "{% set x = cycler %}{{ x.__init__.__globals__ }}",
    "{{ {}.update }}",
    "{{ {}.update(a=1) }}",
    "{{ {}.setdefault('a', 1) }}",
    "{{ [].append(1) }}",
    "{{ items.pop() }}",
    "{{ dict.__base__.__subclasses__() }}",
    "{{ dict.mro() }}",
    "{{ 'a'.__mul__(3) }}",
    "{{ lipsum }}",
    "{{ cycler }}",
    "{{ joiner }}",
    "{{ namespace }}",
    "{{ self }}",
    "{{ range }}",
    "{{ dict }}",
    "{{ cycler|string }}",
    "{{ lipsum|string|truncate(80) }}",
    "{{ [cycler, joiner] }}",
    "{{ {'a': lipsum} }}",
    "{{ cycler ~ '' }}",
    "{{ [cycler]|join(',') }}",
    "{{ cycler|tojson }}",
    "{{ cycler|pprint }}",
    "{{ cycler('a', 'b') }}",
    "{% macro m() %}{{ caller.__globals__ }}{% endmacro %}{% call m() %}{% endcall %}",
    "{% macro m() %}{% endmacro %}{{ m }}{{ m.__globals__ }}",
    "{% import 'os' as os %}{{ os.popen('id').read() }}",
    "{% from 'os' import popen %}{{ popen('id') }}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
    "{% raw %}{{ ''.__class__ }}{% endraw %}",
    "<script>alert(1)</script>{{ '<img src=x onerror=alert(1)>' }}",
]


def test_there_are_at_least_thirty_distinct_payloads() -> None:
    assert len(set(SSTI_PAYLOADS)) == len(SSTI_PAYLOADS) >= 30


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
@pytest.mark.parametrize("part", ["body", "html_body"])
def test_a_payload_as_template_prints_inert_text_or_fails_cleanly(payload: str, part: str) -> None:
    try:
        content = Content(body=payload) if part == "body" else Content(html_body=payload)
        compiled = compile_content(content, Syntax.JINJA)
    except TemplateSyntaxError as error:
        assert_no_leak(str(error))
        return
    with AUDIT.recording() as events:
        try:
            output = getattr(compiled.render(DATA), part)
        except TemplateRenderError as error:
            output = str(error)
    assert forbidden(events) == []
    assert_no_leak(output)


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
@pytest.mark.parametrize("syntax", list(Syntax))
def test_a_payload_as_value_is_inert_text(payload: str, syntax: Syntax) -> None:
    variable = "{v}" if syntax is Syntax.BRACES else "{{ v }}"
    content = Content(
        subject=variable,
        body=variable,
        html_body=f"<p>{variable}</p>",
        push_title=variable,
        push_body=variable,
        push_data=(("k", variable),),
    )
    compiled = compile_content(content, syntax)
    with AUDIT.recording() as events:
        rendered = compiled.render({"v": payload})
    assert forbidden(events) == []
    assert rendered.html_body == f"<p>{escape(payload)}</p>"
    assert {rendered.subject, rendered.body, rendered.push_title, rendered.push_body} == {payload}
    assert rendered.push_data == {"k": payload}


def test_the_audit_hook_sees_what_it_should() -> None:
    with AUDIT.recording() as events, open(__file__, encoding="utf-8"):
        pass
    assert forbidden(events) == ["open"]


# Each bomb, and the error it must end in. Jinja's ** is left-associative: `9**9**9` is `(9**9)**9`, a 78-digit
# number; the tower is `9**(9**9)`.
BOMBS: list[tuple[str, type[TemplateRenderError]]] = [
    (
        "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        RenderLimitError,
    ),
    (
        "{% macro m() %}{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}"
        "{% endmacro %}{{ m() }}",
        RenderLimitError,
    ),
    ("{% for a in range(10000) recursive %}{{ loop(range(10000)) }}{% endfor %}", RenderError),
    ("{{ 'x' * 10**9 }}", RenderLimitError),
    ("{{ [1] * 10**9 }}", RenderLimitError),
    ("{{ 9**(9**9) }}", RenderLimitError),
    ("{{ (2**4000) * (2**4000) }}", RenderLimitError),
    ("{{ '%999999999d' % 1 }}", RenderLimitError),
    ("{{ '%.999999999f' % 1.5 }}", RenderLimitError),
    ("{{ '%*d' % (999999999, 1) }}", RenderError),
    # Python lets a key's parentheses nest, and reads the width after the outer one.
    ("{{ '%((a))999999999s' % {'(a)': 1} }}", RenderError),
    ("{{ '%%%999999999d' % 1 }}", RenderLimitError),
    ("{{ '%(a)s%(b)999999999s' % {'a': 1, 'b': 2} }}", RenderLimitError),
    # Bytes format as readily as text, and the format filter formats any value as text.
    ("{{ '%999999999s'.encode() % 'x'.encode() }}", RenderLimitError),
    ("{{ '%999999999s'.encode()|format('x') }}", RenderLimitError),
    # One key named many times prints its value as many times.
    ("{{ ('%(a)s' * 50000) % {'a': 'x' * 200000} }}", RenderLimitError),
    ("{{ ('%(a)s' * 50000)|format(a='x' * 200000) }}", RenderLimitError),
    ("{{ ('%(a)s' * 50000).encode() % {'a'.encode(): ('x' * 200000).encode()} }}", RenderLimitError),
    ("{{ '{:>999999999}'.format(1) }}", RenderLimitError),
    ("{{ '{:{w}}'.format(1, w=999999999) }}", RenderLimitError),
    ("{{ '{:>200000}{:>200000}'.format(1, 2) }}", RenderLimitError),
    ("{{ 'a'|center(999999999) }}", RenderLimitError),
    ("{{ 'a'|indent(999999999, true) }}", RenderLimitError),
    ("{{ ('a\\n' * 100000)|indent('    ') }}", RenderLimitError),
    ("{{ 'a b'|wordwrap(999999999) }}", RenderLimitError),
    ("{{ ('a' * 100000)|wordwrap(1) }}", RenderLimitError),
    ("{{ 'a b c'|wordwrap(1, wrapstring='x' * 200000) }}", RenderLimitError),
    ("{{ 'abc'|truncate(999999999) }}", RenderLimitError),
    ("{{ '%999999999s'|format('x') }}", RenderLimitError),
    ("{{ ('a' * 1000)|replace('a', 'b' * 1000) }}", RenderLimitError),
    ("{{ ('a' * 100000)|replace('', '--') }}", RenderLimitError),
    ("{{ range(10000)|join('x' * 100) }}", RenderLimitError),
    ("{{ range(10000)|map('center', 200000)|join }}", RenderLimitError),
    ("{{ range(10000)|map('center', 200000)|list }}", RenderLimitError),
    ("{{ ('http://a.co ' * 1000)|urlize(target='x' * 1000) }}", RenderLimitError),
    ("{{ [1]|batch(999999999, 0)|list }}", RenderLimitError),
    ("{{ [1]|slice(999999999)|list }}", RenderLimitError),
    ("{{ 5|round(-999999999) }}", RenderLimitError),
    ("{{ x|tojson(indent=999999) }}", RenderLimitError),
    ("{{ [[1] * 500] * 500|sum(start=[]) }}", RenderError),
    ("{{ range(10**9)|list }}", RenderLimitError),
    ("{{ range(10**100) }}", RenderLimitError),
    ("{{ lipsum(n=100000) }}", RenderLimitError),
    ("{{ 'a'.ljust(999999999) }}", RenderLimitError),
    ("{{ 'a'.zfill(999999999) }}", RenderLimitError),
    ("{{ '\\t'.expandtabs(999999999) }}", RenderLimitError),
    ("{{ ('\\t' * 1000).expandtabs(1000) }}", RenderLimitError),
    ("{{ ('a' * 1000).replace('a', 'b' * 1000) }}", RenderLimitError),
    ("{{ ('a' * 100000).translate({97: 'b' * 100}) }}", RenderLimitError),
    ("{{ ('x' * 1000).join(['y' * 1000] * 1000) }}", RenderLimitError),
    ("{{ (1).to_bytes(999999999, 'big') }}", RenderLimitError),
    ("{{ dict.fromkeys(range(10000), 'x' * 1000) }}", RenderLimitError),
    ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", RenderError),
    ("{% macro m(n) %}{{ m(n ~ n) }}{% endmacro %}{{ m('x') }}", RenderLimitError),
    ("{% for i in range(10000) %}{{ 'x' * 100 }}{% endfor %}", RenderLimitError),
    ("{% filter upper %}{% for i in range(10000) %}{{ 'x' * 100 }}{% endfor %}{% endfilter %}", RenderLimitError),
    ("{% set b %}{% for i in range(10000) %}{{ 'x' * 100 }}{% endfor %}{% endset %}{{ b|length }}", RenderLimitError),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        RenderLimitError,
    ),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        RenderLimitError,
    ),
    (
        "{% set ns = namespace(l=[0]) %}{% for i in range(64) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}"
        "{{ ns.l|length }}",
        RenderLimitError,
    ),
    (
        "{% set ns = namespace(d={}) %}{% for i in range(64) %}{% set ns.d = {'a': ns.d, 'b': ns.d} %}{% endfor %}",
        RenderLimitError,
    ),
    ("{% set t = (x,) * 200 %}{{ [t] * 2000 }}", RenderLimitError),
]


@pytest.mark.parametrize(("bomb", "error"), BOMBS)
def test_a_bomb_fails_instead_of_hanging(bomb: str, error: type[TemplateRenderError]) -> None:
    # Compiling is bounded too: the operators that could be folded into huge constants (+ * ** %) are intercepted,
    # which also keeps Jinja from computing them at compile time.
    compiled = compile_content(Content(body=bomb), Syntax.JINJA)
    # The per-test timeout is the backstop against a hang; how long it took is not asserted (speed lives in bench/).
    with pytest.raises(error):
        compiled.render({"x": "text"})


AMPLIFYING_FORMATS = [
    "{{ '%99999999s'.encode() % 'x'.encode() }}",
    "{{ '%99999999s'.encode()|format('x') }}",
    "{{ ('%(a)s' * 5000) % {'a': 'x' * 200000} }}",
    "{{ ('%(a)s' * 5000)|format(a='x' * 200000) }}",
]


@pytest.mark.parametrize("bomb", AMPLIFYING_FORMATS)
def test_an_amplifying_format_is_refused_before_it_allocates(bomb: str) -> None:
    compiled = compile_content(Content(body=bomb), Syntax.JINJA)
    tracemalloc.start()
    try:
        with pytest.raises(RenderLimitError):
            compiled.render({})
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The operands are under a megabyte; what they would make is 100 MB to a GB, measured only once made.
    assert peak_bytes < 20 * 2**20, f"{peak_bytes / 2**20:.0f} MiB allocated"


def test_percent_formats_without_widening_fields_render_as_in_python() -> None:
    template = "{{ '%(n)s%% of %(s)s, %%5d stays text' % {'n': 5, 's': 1} }}{{ ' %-3s|' % 'a' }}"
    compiled = compile_content(Content(body=template), Syntax.JINJA)
    assert compiled.render({}).body == "5% of 1, %5d stays text a  |"


def test_a_tower_of_powers_left_associates_as_in_jinja() -> None:
    assert compile_content(Content(body="{{ 9**9**9 }}")).render({}).body == str((9**9) ** 9)


def test_a_limit_error_names_the_part_and_line() -> None:
    compiled = compile_content(Content(push_body="fine\n{{ 'x' * 10**9 }}"), Syntax.JINJA)
    with pytest.raises(RenderLimitError) as caught:
        compiled.render({})
    assert (caught.value.part, caught.value.line) == ("push_body", 2)
    assert str(caught.value).startswith("push_body, line 2: ")
