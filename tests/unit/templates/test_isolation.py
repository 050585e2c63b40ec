"""TemplateProcesses: Jinja compiled and rendered in worker processes, a worker over its budget killed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clarion.templates import isolation
from clarion.templates.isolation import TemplateProcesses
from clarion.templates.rendering import Content, MissingVariablesError, RenderError, Syntax


@pytest.fixture
async def processes() -> AsyncIterator[TemplateProcesses]:
    pool = TemplateProcesses(workers=1)
    yield pool
    pool.close()


async def test_renders_and_typed_errors_cross_from_the_worker(processes: TemplateProcesses) -> None:
    content = Content(subject="Hi {{ name }}", body="{{ items|join(', ') }}")
    rendered = await processes.render(("k", 1, "en"), content, Syntax.JINJA, {"name": "Ada", "items": [1, 2]})
    assert (rendered.subject, rendered.body) == ("Hi Ada", "1, 2")
    with pytest.raises(MissingVariablesError) as missing:
        await processes.render(("k", 1, "en"), content, Syntax.JINJA, {})
    assert missing.value.names == ["items", "name"]
    with pytest.raises(RenderError) as failed:
        await processes.render(("k", 2, "en"), Content(subject="{{ 1 / 0 }}"), Syntax.JINJA, {})
    assert (failed.value.part, failed.value.line) == ("subject", 1)


async def test_a_compile_over_its_budget_is_killed_and_the_next_task_runs(
    processes: TemplateProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(isolation, "COMPILE_BUDGET_S", 0.2)
    large = Content(subject="s", body="{{ a }} " * 20_000)  # several seconds of Jinja's compiler
    found = await processes.first_syntax_error({"en": large}, Syntax.JINJA)
    assert found is not None
    locale, error = found
    assert locale == "en"
    assert "takes more than 0.2 s to compile" in error.description
    # The killed worker was replaced.
    assert await processes.first_syntax_error({"en": Content(subject="{{ a }}")}, Syntax.JINJA) is None
    syntax = await processes.first_syntax_error({"en": Content(subject="{{ a")}, Syntax.JINJA)
    assert syntax is not None
    assert syntax[1].part == "subject"
