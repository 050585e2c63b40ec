"""Compiling and rendering Jinja templates in worker processes, under budgets that really stop the work.

A template is code its author wrote. The sandbox (sandbox.py, limits.py) bounds what a render may build and checks
its deadline between operations, but it cannot interrupt one long operation: Jinja's compiler on a large template,
or anything Python runs in C, holds the GIL, and a thread cannot be stopped from outside. A process can. Compiles
and renders of Jinja templates run in a pool of worker processes (pebble's ProcessPool, which kills and replaces a
worker whose task overruns its timeout), so a template that overruns costs its own worker and its caller a clear
error, and the server's event loop never waits on it. Brace templates (braces.py) are linear in their size and
render in the server's process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import pebble

from clarion.core.logging import get_logger
from clarion.templates import content as template_content
from clarion.templates.rendering import (
    CompiledTemplateCache,
    Content,
    Rendered,
    RenderLimitError,
    RenderLimits,
    Syntax,
    TemplateRenderError,
    TemplateSyntaxError,
)

log = get_logger(__name__)

# A worker's soft deadline (RenderLimits.max_render_s) stops a render between two operations; this much longer,
# the worker is killed. Compiling has no soft deadline: its budget is the hard one, and a render may have to
# compile first (a worker compiles each template once), so a render's hard budget includes it.
_KILL_AFTER_S = 1.0
COMPILE_BUDGET_S = 10.0

# One render: the compiled template's key (template, version, locale), its content and syntax, and the data.
RenderJob = tuple[Hashable, Content, Syntax, Mapping[str, Any]]

# Each worker process keeps the templates it compiled, by the caller's key (template, version, locale).
_compiled = CompiledTemplateCache()


def _render(key: Hashable, content: Content, syntax: Syntax, data: Mapping[str, Any]) -> Rendered:
    return _compiled.get_or_compile(key, content, syntax).render(data)


def _render_many(jobs: Sequence[RenderJob], budget_s: float) -> list[Rendered | TemplateRenderError | None]:
    # Renders after the batch's budget is spent are left out (None), to be asked for again; each render still has
    # its own deadline.
    deadline = time.monotonic() + budget_s
    outcomes: list[Rendered | TemplateRenderError | None] = []
    for job in jobs:
        if time.monotonic() > deadline:
            outcomes.append(None)
            continue
        try:
            outcomes.append(_render(*job))
        except TemplateRenderError as error:
            outcomes.append(error)
    return outcomes


class TemplateProcesses:
    """Where templates compile and render: Jinja in a pool of worker processes (started on first use, stopped by
    close()); braces here, linear in their size and bounded by the output limit (braces.py), cheaper than a hop."""

    def __init__(self, *, workers: int, limits: RenderLimits | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._workers = workers
        self._limits = limits or RenderLimits()
        self._pool: pebble.ProcessPool | None = None
        self._here = CompiledTemplateCache()  # brace templates

    async def render(self, key: Hashable, content: Content, syntax: Syntax, data: Mapping[str, Any]) -> Rendered:
        """`content` rendered with `data` (compiled once per process and `key`); raises TemplateRenderError."""
        if syntax is Syntax.BRACES:
            return self._here.get_or_compile(key, content, syntax).render(data)
        timeout_s = COMPILE_BUDGET_S + self._limits.max_render_s + _KILL_AFTER_S
        rendered: Rendered = await self._run(_render, (key, content, syntax, data), timeout_s, part="template")
        return rendered

    async def render_many(
        self, jobs: Sequence[RenderJob], *, budget_s: float
    ) -> list[Rendered | TemplateRenderError | None]:
        """Each job rendered, or its error, in order. The Jinja ones share `budget_s` in one task of a worker: None
        for those left when it was spent. If that worker is killed (a render overran by far), each is rendered
        alone, so that the template at fault answers for itself instead of the batch coming back again and again."""
        jinja = [job for job in jobs if job[2] is not Syntax.BRACES]
        in_worker: list[Rendered | TemplateRenderError | None] = []
        if jinja:
            timeout_s = COMPILE_BUDGET_S + budget_s + self._limits.max_render_s + _KILL_AFTER_S
            try:
                in_worker = await self._run(_render_many, (jinja, budget_s), timeout_s, part="template")
            except RenderLimitError:
                in_worker = [await self._render_or_error(*job) for job in jinja]
        from_worker = iter(in_worker)
        return [next(from_worker) if job[2] is not Syntax.BRACES else await self._render_or_error(*job) for job in jobs]

    async def _render_or_error(
        self, key: Hashable, content: Content, syntax: Syntax, data: Mapping[str, Any]
    ) -> Rendered | TemplateRenderError:
        try:
            return await self.render(key, content, syntax, data)
        except TemplateRenderError as error:
            return error

    async def first_syntax_error(
        self, contents: dict[str, Content], syntax: Syntax
    ) -> tuple[str, TemplateSyntaxError] | None:
        """content.first_syntax_error: here for braces, in a worker for Jinja, killed after COMPILE_BUDGET_S (then
        that is the error)."""
        if syntax is Syntax.BRACES:
            return template_content.first_syntax_error(contents, syntax)
        try:
            found: tuple[str, TemplateSyntaxError] | None = await self._run(
                template_content.first_syntax_error, (contents, syntax), COMPILE_BUDGET_S, part=""
            )
        except RenderLimitError:
            description = f"the template takes more than {COMPILE_BUDGET_S:g} s to compile: make it smaller"
            return next(iter(contents)), TemplateSyntaxError(part="", line=None, description=description)
        return found

    async def _run(self, function: Any, args: tuple[Any, ...], timeout_s: float, *, part: str) -> Any:
        if self._pool is None:
            # spawn, not fork: the server's process runs gRPC's threads, which a fork would copy mid-flight.
            self._pool = pebble.ProcessPool(max_workers=self._workers, context=multiprocessing.get_context("spawn"))
        future = self._pool.schedule(function, args=args, timeout=timeout_s)
        try:
            # Shielded: a caller that goes away (a client's deadline) must not cancel a running task, which would
            # kill its worker and the templates it compiled; it finishes within its budget and is dropped.
            return await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            if not future.running():
                future.cancel()  # type: ignore[no-untyped-call]  # pebble is untyped; still queued: dropped
            raise
        except TimeoutError:
            log.warning("template_worker_killed", reason="over budget", budget_s=timeout_s)
            raise RenderLimitError("the template took too long and was stopped", part=part) from None
        except pebble.ProcessExpired as error:
            # The worker died under the task: out of memory, or killed from outside.
            log.warning("template_worker_died", error=str(error))
            raise RenderLimitError("the template stopped its worker (too much memory?)", part=part) from None

    def close(self) -> None:
        """Stop the workers (a task still running is abandoned)."""
        if self._pool is not None:
            self._pool.stop()  # type: ignore[no-untyped-call]  # pebble is untyped
            self._pool.join(timeout=5)
            self._pool = None
