"""Properties of the brace renderer, over generated text: it is the identity on text without braces, doubling
braces escapes them, `{name}` prints the value, and no input makes it raise anything but a TemplateRenderError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.templates.rendering import Content, Syntax, TemplateRenderError, compile_content

# Rendered into the plain-text body: no escaping and no line joining, so what goes in is what comes out.
EXAMPLES = settings(max_examples=300, deadline=None)

IDENTIFIERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]*", fullmatch=True)
TEXT_WITHOUT_BRACES = st.text().map(lambda text: text.replace("{", "").replace("}", ""))
# Text rich in braces and identifier characters, so that templates of every shape are generated.
BRACE_HEAVY_TEXT = st.text(alphabet=st.sampled_from("{}{}ab_ 1.\n"), max_size=40) | st.text()


def render_body(template: str, data: dict[str, object] | None = None) -> str:
    """`template` as the body of a brace template, rendered with `data`."""
    return compile_content(Content(body=template), Syntax.BRACES).render(data or {}).body


@EXAMPLES
@given(TEXT_WITHOUT_BRACES)
def test_text_without_braces_renders_unchanged(text: str) -> None:
    assert render_body(text) == text


@EXAMPLES
@given(st.text())
def test_doubled_braces_render_as_the_original_text(text: str) -> None:
    assert render_body(text.replace("{", "{{").replace("}", "}}")) == text


@EXAMPLES
@given(IDENTIFIERS, TEXT_WITHOUT_BRACES, TEXT_WITHOUT_BRACES, TEXT_WITHOUT_BRACES)
def test_a_variable_renders_its_value(name: str, value: str, before: str, after: str) -> None:
    assert render_body(before + "{" + name + "}" + after, {name: value}) == before + value + after


@EXAMPLES
@given(BRACE_HEAVY_TEXT, st.dictionaries(IDENTIFIERS, st.text() | st.integers() | st.none(), max_size=3))
def test_any_input_renders_or_raises_a_template_render_error(template: str, data: dict[str, object]) -> None:
    try:
        compiled = compile_content(Content(subject=template, html_body=template), Syntax.BRACES)
        compiled.render(data)
    except TemplateRenderError:
        pass
