"""Both syntaxes end to end: detection, the seed example, escaping, one-line subjects, missing variables, syntax
errors, data normalisation, limits and the compiled-template cache."""

from __future__ import annotations

from typing import Any

import pytest

from clarion.templates.rendering import (
    CompiledTemplateCache,
    Content,
    MissingVariablesError,
    NullVariablesError,
    RenderError,
    RenderLimitError,
    RenderLimits,
    Syntax,
    TemplateRenderError,
    TemplateSyntaxError,
    compile_content,
    detect_syntax,
    normalize_data,
)

SEED = Content(
    subject="Your Weekly {app_name} Digest: {new_updates} new items!",
    html_body=(
        '<h3>Weekly Summary</h3><p>You have {new_updates} new items. <a href="{digest_link}">View Digest</a></p>'
    ),
)
SEED_LINK = 'https://example.com/digest?a=1&b="x"'

# A typical Jinja notification; sandbox.py quotes its render time.
DIGEST = """<h3>Weekly Summary for {{ user.name|title }}</h3>
<p>You have {{ new_updates }} new items{% if new_updates > 5 %}, a busy week{% endif %}.</p>
<ul>{% for item in items %}<li class="{{ loop.cycle('odd', 'even') }}"><a href="{{ item.url }}">\
{{ item.title|truncate(40) }}</a> {{ item.count }} comments</li>{% endfor %}</ul>
<p><a href="{{ digest_link }}">View Digest</a> · {{ app_name|upper }}</p>"""


def digest_data(items: int = 10) -> dict[str, Any]:
    """Data for DIGEST with `items` items."""
    return {
        "user": {"name": "ada lovelace"},
        "new_updates": 10,
        "app_name": "MyApp",
        "digest_link": "https://example.com/d?a=1&b=2",
        "items": [
            {"url": f"https://example.com/{i}", "title": f"Item number {i} with a longish title here", "count": i}
            for i in range(items)
        ],
    }


def render(syntax: Syntax, data: dict[str, Any] | None = None, **parts: Any) -> Any:
    """Compile a Content made of `parts` in `syntax` and render it with `data`."""
    return compile_content(Content(**parts), syntax).render(data or {})


@pytest.mark.parametrize("new_updates", ["10", 10, 10.0])
def test_seed_subject_renders_exactly(new_updates: object) -> None:
    data = normalize_data({"app_name": "MyApp", "new_updates": new_updates, "digest_link": SEED_LINK})
    assert compile_content(SEED).render(data).subject == "Your Weekly MyApp Digest: 10 new items!"


def test_seed_html_body_escapes_the_link_and_leaves_the_html_alone() -> None:
    rendered = compile_content(SEED).render({"app_name": "MyApp", "new_updates": 10, "digest_link": SEED_LINK})
    assert rendered.html_body == (
        "<h3>Weekly Summary</h3><p>You have 10 new items. "
        '<a href="https://example.com/digest?a=1&amp;b=&#34;x&#34;">View Digest</a></p>'
    )
    assert (rendered.body, rendered.push_title, rendered.push_body, rendered.push_data) == ("", "", "", {})


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (SEED, Syntax.BRACES),
        (Content(), Syntax.BRACES),
        (Content(body="{% if x %}yes{% endif %}"), Syntax.JINJA),
        (Content(html_body="<p>{{ name }}</p>"), Syntax.JINJA),
        (Content(subject="{name}", push_data=(("url", "{{ link }}"),)), Syntax.JINJA),
        (Content(push_title="{ spaced }"), Syntax.BRACES),
    ],
)
def test_detect_syntax(content: Content, expected: Syntax) -> None:
    assert detect_syntax(content) is expected


def test_compile_content_detects_the_syntax_when_none_is_given() -> None:
    assert compile_content(Content(body="Hi {{ name }}")).syntax is Syntax.JINJA
    assert compile_content(Content(body="Hi {name}")).syntax is Syntax.BRACES


def test_braces_doubled_braces_are_literal_and_values_print_as_json_scalars() -> None:
    data = {"t": True, "f": False, "n": 3.0, "x": 2.5, "s": "{b}"}
    rendered = render(Syntax.BRACES, data, body="{{a}} |{t} {f} {n} {x} {s} }}")
    assert rendered.body == "{a} |true false 3 2.5 {b} }"


def test_jinja_prints_none_inside_values_and_booleans_like_braces() -> None:
    data = {"items": [None, 1], "t": True, "n": 3.0}
    body = "{{ items[0] }}|{{ t }}|{{ n }}|{{ 'x' ~ t }}"
    assert render(Syntax.JINJA, data, body=body).body == "|true|3|xtrue"


@pytest.mark.parametrize(
    ("syntax", "body"),
    [(Syntax.BRACES, "Hi {name}, {count} {other}"), (Syntax.JINJA, "Hi {{ name }}, {{ count }} {{ other }}")],
)
def test_a_null_placeholder_is_refused_like_a_missing_one(syntax: Syntax, body: str) -> None:
    # A client library that drops protobuf Value kinds sends nulls: a message with blanks must not go out.
    with pytest.raises(NullVariablesError) as caught:
        render(syntax, {"name": None, "count": 3, "other": None}, body=body)
    assert caught.value.names == ["name", "other"]
    assert str(caught.value) == "null template variables: name, other"


def test_jinja_renders_a_typical_digest() -> None:
    rendered = render(Syntax.JINJA, digest_data(2), html_body=DIGEST)
    assert rendered.html_body == (
        "<h3>Weekly Summary for Ada Lovelace</h3>\n<p>You have 10 new items, a busy week.</p>\n"
        '<ul><li class="odd"><a href="https://example.com/0">Item number 0 with a longish title here</a>'
        " 0 comments</li>"
        '<li class="even"><a href="https://example.com/1">Item number 1 with a longish title here</a>'
        " 1 comments</li>"
        '</ul>\n<p><a href="https://example.com/d?a=1&amp;b=2">View Digest</a> · MYAPP</p>'
    )


@pytest.mark.parametrize("syntax", list(Syntax))
def test_only_the_html_body_is_escaped(syntax: Syntax) -> None:
    template = "{v}" if syntax is Syntax.BRACES else "{{ v }}"
    value = "<b>Tom & \"Jerry\"</b> 'x'"
    content = {part: template for part in ("subject", "body", "html_body", "push_title", "push_body")}
    rendered = render(syntax, {"v": value}, push_data=(("k", template),), **content)
    assert rendered.html_body == "&lt;b&gt;Tom &amp; &#34;Jerry&#34;&lt;/b&gt; &#39;x&#39;"
    assert {rendered.subject, rendered.body, rendered.push_title, rendered.push_body} == {value}
    assert rendered.push_data == {"k": value}


@pytest.mark.parametrize("syntax", list(Syntax))
def test_values_are_never_evaluated_as_templates(syntax: Syntax) -> None:
    template = "{v}" if syntax is Syntax.BRACES else "{{ v }}"
    value = "{{ 7 * 7 }} {% for i in range(3) %}{{ i }}{% endfor %} {v} {w}"
    assert render(syntax, {"v": value}, body=template).body == value


def test_jinja_markup_in_html_is_kept_and_safe_values_are_not_escaped() -> None:
    rendered = render(Syntax.JINJA, {"v": "<i>x</i>"}, html_body="<p>{{ v|safe }}{{ '<br>' }}</p>")
    assert rendered.html_body == "<p><i>x</i>&lt;br&gt;</p>"


@pytest.mark.parametrize("syntax", list(Syntax))
def test_subject_and_push_title_are_one_line(syntax: Syntax) -> None:
    template = "A {v} B" if syntax is Syntax.BRACES else "A {{ v }} B"
    data = {"v": "one\r\ntwo\n\n\rthree\rfour"}
    rendered = render(syntax, data, subject=template + "\n", push_title=template, body=template, push_body=template)
    assert rendered.subject == "A one two three four B "
    assert rendered.push_title == "A one two three four B"
    assert rendered.body == rendered.push_body == "A one\r\ntwo\n\n\rthree\rfour B"


@pytest.mark.parametrize(
    ("syntax", "parts"),
    [
        (Syntax.BRACES, {"subject": "{b} {a}", "html_body": "{c}{a}", "push_data": (("u", "{d}"),)}),
        (
            Syntax.JINJA,
            {
                "subject": "{{ b }} {{ a }}",
                "html_body": "{% for x in c %}{{ x }}{% endfor %}",
                "push_data": (("u", "{{ d.e }}"),),
            },
        ),
    ],
)
def test_missing_variables_are_all_named_at_once(syntax: Syntax, parts: dict[str, Any]) -> None:
    compiled = compile_content(Content(**parts), syntax)
    assert compiled.variables() == {"a", "b", "c", "d"}
    with pytest.raises(MissingVariablesError) as caught:
        compiled.render({"b": 1, "unused": 2})
    assert caught.value.names == ["a", "c", "d"]
    assert str(caught.value) == "missing template variables: a, c, d"
    assert caught.value.part == ""


def test_jinja_globals_and_template_locals_are_not_variables() -> None:
    template = "{% set n = 2 %}{% for i in range(n) %}{{ i }}{{ loop.index }}{% endfor %}{{ namespace(a=1).a }}{{ x }}"
    compiled = compile_content(Content(body=template), Syntax.JINJA)
    assert compiled.variables() == {"x"}
    assert compiled.render({"x": "!"}).body == "01121!"


@pytest.mark.parametrize(
    ("source", "line", "description"),
    [
        ("Hi { name }", 1, "'{ name }' is not a variable"),
        ("Hi\nthere {a.b}", 2, "'{a.b}' is not a variable"),
        ("{0}", 1, "'{0}' is not a variable"),
        ("a\nb\n{", 3, "unclosed '{'"),
        ("}", 1, "unmatched '}'"),
    ],
)
def test_brace_syntax_errors_name_the_part_and_line(source: str, line: int, description: str) -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        compile_content(Content(subject="fine {x}", push_body=source), Syntax.BRACES)
    assert (caught.value.part, caught.value.line) == ("push_body", line)
    assert caught.value.description.startswith(description)
    assert str(caught.value).startswith(f"push_body, line {line}: ")


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("Hi {{ name ", 1),
        ("one\ntwo\n{% for x in y %}", 3),
        ("{{ x|no_such_filter }}", 1),
        ("a\n{% endif %}", 2),
        ("{% include 'other.html' %}", 1),
    ],
)
def test_jinja_syntax_errors_name_the_part_and_line(source: str, line: int) -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        compile_content(Content(body="fine", push_data=(("url", source),)), Syntax.JINJA)
    assert (caught.value.part, caught.value.line) == ("push_data.url", line)
    assert caught.value.description


def test_deep_nesting_is_a_syntax_error() -> None:
    loops = "{% for x in y %}" * 30 + "{% endfor %}" * 30
    with pytest.raises(TemplateSyntaxError, match="nested too deeply"):
        compile_content(Content(body=loops), Syntax.JINJA)


def test_duplicate_push_data_keys_are_refused() -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        compile_content(Content(push_data=(("k", "a"), ("k", "b"))), Syntax.BRACES)
    assert caught.value.part == "push_data.k"


def test_push_data_renders_by_key_and_empty_parts_render_empty() -> None:
    content = Content(push_title="T", push_data=(("url", "https://x/{id}"), ("empty", ""), ("n", "{n}")))
    rendered = compile_content(content).render({"id": "a b", "n": 5.0})
    assert rendered.push_data == {"url": "https://x/a b", "empty": "", "n": "5"}
    assert (rendered.subject, rendered.body, rendered.html_body, rendered.push_body) == ("", "", "", "")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("line one\n{{ user.name }}", "has no attribute 'name'"),
        ("{{ 1 / n }}", "division by zero"),
        ("{{ n + 'x' }}", "unsupported operand"),
        ("{{ n.__class__ }}", "not allowed"),
    ],
)
def test_jinja_render_errors_name_the_part_and_line(source: str, message: str) -> None:
    compiled = compile_content(Content(html_body=source), Syntax.JINJA)
    with pytest.raises(RenderError, match=message) as caught:
        compiled.render({"user": {}, "n": 0})
    assert caught.value.part == "html_body"
    assert caught.value.line == source.count("\n") + 1


@pytest.mark.parametrize("syntax", list(Syntax))
def test_output_over_the_limit_is_refused_across_parts(syntax: Syntax) -> None:
    template = "{v}" if syntax is Syntax.BRACES else "{{ v }}"
    content = Content(subject=template, body=template, html_body=template)
    compiled = compile_content(content, syntax, limits=RenderLimits(max_output_chars=25))
    assert compiled.render({"v": "x" * 8}).body == "x" * 8
    with pytest.raises(RenderLimitError) as caught:
        compiled.render({"v": "x" * 9})
    assert caught.value.part == "html_body"


def test_normalize_data_makes_integral_floats_ints_everywhere() -> None:
    data = {"n": 10.0, "x": 2.5, "b": True, "s": "1.0", "nested": {"l": [1.0, {"m": -0.0}], "t": (3.0, "a")}}
    normalized = normalize_data(data)
    assert normalized == {"n": 10, "x": 2.5, "b": True, "s": "1.0", "nested": {"l": [1, {"m": 0}], "t": (3, "a")}}
    assert type(normalized["n"]) is int
    assert type(normalized["nested"]["l"][0]) is int
    assert normalize_data(float("inf")) == float("inf")


def test_errors_share_one_base() -> None:
    for error in (TemplateSyntaxError, MissingVariablesError, NullVariablesError, RenderLimitError, RenderError):
        assert issubclass(error, TemplateRenderError)


class TestCompiledTemplateCache:
    def test_a_hit_returns_the_same_object(self) -> None:
        cache = CompiledTemplateCache()
        first = cache.get_or_compile(("welcome", 1, "en"), SEED, None)
        assert cache.get_or_compile(("welcome", 1, "en"), SEED, None) is first
        assert cache.get_or_compile(("welcome", 2, "en"), SEED, None) is not first
        assert len(cache) == 2

    def test_the_least_recently_used_entry_is_evicted(self) -> None:
        cache = CompiledTemplateCache(max_entries=2)
        a = cache.get_or_compile("a", Content(body="a"), None)
        b = cache.get_or_compile("b", Content(body="b"), None)
        assert cache.get_or_compile("a", Content(body="a"), None) is a  # a is now the most recently used
        cache.get_or_compile("c", Content(body="c"), None)
        assert len(cache) == 2
        assert cache.get_or_compile("a", Content(body="a"), None) is a
        assert cache.get_or_compile("b", Content(body="b"), None) is not b

    def test_other_content_under_the_same_key_is_compiled_again(self) -> None:
        cache = CompiledTemplateCache()
        old = cache.get_or_compile("k", Content(body="old {x}"), None)
        new = cache.get_or_compile("k", Content(body="new {x}"), None)
        assert new is not old
        assert new.render({"x": 1}).body == "new 1"
        assert cache.get_or_compile("k", Content(body="new {x}"), Syntax.JINJA).syntax is Syntax.JINJA

    def test_templates_that_do_not_compile_are_not_cached(self) -> None:
        cache = CompiledTemplateCache()
        with pytest.raises(TemplateSyntaxError):
            cache.get_or_compile("k", Content(body="{"), Syntax.BRACES)
        assert len(cache) == 0
