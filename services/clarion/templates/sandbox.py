"""The Jinja environment templates render in: Jinja's immutable sandbox, bounded in time, size and what it prints.

Jinja's sandbox keeps a template away from Python internals (`__class__`, `__globals__`, mutating methods), but
not from spending unbounded CPU or memory: `'x' * 10**9`, `9**(9**9)`, `'%999999999d' % 1` and three nested loops
over `range(10000)` are all "safe" to it. Templates are customer input rendered in shared workers, so here:

* every value a template builds (through a call, filter, operator, literal, `~` or captured block) is measured
  against RenderLimits, with the checks of limits.py, some before and all after the operation;
* every loop iteration and every call checks the render's deadline, so nested loops that print nothing stop;
* only data (text, numbers, lists and mappings of them) can be printed or turned into text, so `{{ cycler }}` or
  `{{ lipsum|string }}` cannot show `<class 'jinja2.utils.Cycler'>` or a function's address.

The deadline is checked in code, not with `sys.settrace`. A tracer that hands a line tracer to template frames
only is still called for every Python frame while it is installed: on a 10-item digest (DIGEST in
tests/unit/templates/test_rendering.py, Python 3.11), Jinja's own sandbox renders in 107 µs, and in 315 µs under
such a tracer, which would also displace coverage tools and debuggers meanwhile. Instead, `compile_template`
rewrites the parsed template so that every `for` iterates through `clarion_loop`, and `call` checks as well:
0.1 µs per loop iteration or call. With every check in this module and limits.py, the digest renders in 170 µs.
"""

from __future__ import annotations

import pprint  # noqa: F401  Jinja imports pprint, textwrap and jinja2.constants on first use; importing them here
import sys
import textwrap  # noqa: F401  (see pprint)
from collections.abc import Callable, Iterable, Iterator
from functools import wraps
from typing import Any, NoReturn

import jinja2.constants  # noqa: F401  (see pprint)
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer
from markupsafe import EscapeFormatter, Markup

from clarion.templates.braces import format_value
from clarion.templates.limits import (
    LimitExceeded,
    RenderLimits,
    check_binop,
    check_deadline,
    check_filter_call,
    check_format_spec,
    check_method_call,
    check_width,
    checked_result,
    measure,
)

# Filters that only rearrange or look at their input. Every other filter turns its arguments into text, so they
# must be data and are measured first (which is also what makes `{{ lipsum|string }}` fail instead of leaking).
_STRUCTURAL_FILTERS = frozenset(
    {"abs", "attr", "batch", "count", "d", "default", "dictsort", "first", "float", "groupby", "int", "items", "last"}
    | {"length", "list", "map", "max", "min", "random", "reject", "rejectattr", "reverse", "round", "select"}
    | {"selectattr", "slice", "sort", "sum", "unique"}
)


def _bounded_filter(name: str, function: Callable[..., Any], limits: RenderLimits) -> Callable[..., Any]:
    # Filters marked pass_context/pass_eval_context/pass_environment get that object first; `wraps` copies the mark.
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0
    structural = name in _STRUCTURAL_FILTERS

    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        check_deadline()
        value, rest = args[skip], args[skip + 1 :]
        if not structural:
            # join may take a lazy filter result; it measures the items themselves, as it collects them.
            for argument in (*rest, *kwargs.values()) if name == "join" else (value, *rest, *kwargs.values()):
                measure(argument, limits.max_value_size, data_only=True)
        value = check_filter_call(name, value, rest, kwargs, limits)
        result = function(*args[:skip], value, *rest, **kwargs)
        return checked_result(result, limits)

    return bounded


class _BoundedFormatter(SandboxedFormatter):
    """str.format in templates: Jinja's sandboxed attribute lookups, plus bounded widths and total size."""

    def __init__(self, env: ClarionSandbox, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self._limits = env.limits
        self._written = 0

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        value, first = super().get_field(field_name, args, kwargs)
        measure(value, self._limits.max_value_size, data_only=True)  # before `!r` can show a function's repr
        return value, first

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec, self._limits)
        text = super().format_field(value, format_spec)
        self._written += len(text)
        check_width(self._written, self._limits, "a formatted text")
        return text


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    """The same, for `Markup.format`, which escapes what it inserts."""


class ClarionSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with StrictUndefined and every bound described in this module's docstring."""

    # Intercepting an operator also stops Jinja from constant-folding it at compile time, where `{{ 9**(9**9) }}`
    # would otherwise be computed, unbounded, by compile_content.
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, limits: RenderLimits, *, autoescape: bool) -> None:
        # Templates render exactly as written, trailing newline included, like brace templates.
        super().__init__(autoescape=autoescape, undefined=StrictUndefined, keep_trailing_newline=True)
        self.limits = limits
        self.finalize = self._printable
        self.filters = {name: _bounded_filter(name, f, limits) for name, f in self.filters.items()}
        self.globals["range"] = self._range
        self.globals["lipsum"] = self._lipsum

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Every call a template makes: checks the deadline (so recursion and `loop()` stop too), the arguments of
        methods that can grow a value, and the size of the result."""
        check_deadline()
        if getattr(obj, "__func__", None) is ClarionSandbox.clarion_loop:
            return obj(*args)  # a loop's items are data that exists already: not measured, not wrapped again
        args = check_method_call(obj, args, kwargs, self.limits)
        return checked_result(super().call(context, obj, *args, **kwargs), self.limits)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """The intercepted operators, checked before and measured after."""
        check_binop(operator, left, right, self.limits)
        return checked_result(self.binop_table[operator](left, right), self.limits)

    def concat(self, parts: Iterable[str]) -> str:
        """Join a captured block (macro body, `{% set %}` block, `{% filter %}` body) without passing the limit.
        The parts are references to strings that may be large, so their total is checked before joining."""
        collected: list[str] = []
        total = 0
        for part in parts:
            total += len(part)
            check_width(total, self.limits, "a captured block")
            collected.append(part)
        return "".join(collected)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` and `format_map`, through the bounded formatter (Jinja's own wraps a sandboxed one)."""
        if getattr(value, "__name__", None) not in ("format", "format_map"):
            return None
        owner = getattr(value, "__self__", None)
        if not isinstance(owner, str):
            return None
        is_format_map = value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                positional, named = (), args[0]
            else:
                positional, named = args, kwargs
            formatter: _BoundedFormatter
            if isinstance(owner, Markup):
                formatter = _BoundedEscapeFormatter(self, escape=owner.escape)
            else:
                formatter = _BoundedFormatter(self)
            return type(owner)(formatter.vformat(owner, positional, named))

        return bounded_format

    def handle_exception(self, source: str | None = None) -> NoReturn:
        """Re-raise the error as it is. Jinja's version compiles and runs a stub for each template frame to make
        tracebacks point at template lines: work on every failed render, and `compile`/`exec` events that audit
        hooks would rightly flag. `template_line` finds the line without it."""
        error = sys.exception()
        assert error is not None  # Jinja calls this from its except blocks only
        raise error

    def clarion_loop(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """What every `for` iterates through (see `_Hardener`): the deadline is checked at each item."""
        for item in iterable:
            check_deadline()
            yield item

    def clarion_checked(self, value: Any) -> Any:
        """What literals and `~` pass through (see `_Hardener`); `call` measures the result."""
        return value

    def clarion_text(self, value: Any) -> Any:
        """An operand of `~`: data only, printed as `{{ }}` would print it."""
        return self._printable(value)

    def _printable(self, value: Any) -> Any:
        # Jinja's finalize: every `{{ }}` passes through here. Undefined raises its own error when printed.
        if isinstance(value, str | Undefined):
            return value
        measure(value, self.limits.max_value_size, data_only=True)
        return format_value(value) if value is None or isinstance(value, bool | float) else value

    def _range(self, *args: int) -> range:
        numbers = range(*args)
        try:
            size = len(numbers)
        except OverflowError:
            size = sys.maxsize
        if size > self.limits.max_range:
            raise LimitExceeded(f"range() makes at most {self.limits.max_range} numbers")
        return numbers

    def _lipsum(self, n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
        if n * max > self.limits.max_range:
            raise LimitExceeded(f"lipsum makes at most {self.limits.max_range} words")
        return generate_lorem_ipsum(n, html, min, max)


def _helper_call(helper: str, node: nodes.Node) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(helper), [node], [], None, None, lineno=node.lineno)


class _Hardener(NodeTransformer):
    """Routes loops, literals and concatenations through ClarionSandbox's helpers, and refuses other templates."""

    def __init__(self, env: ClarionSandbox) -> None:
        self._eval_ctx = nodes.EvalContext(env)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [self._unfolded(child) for child in node.nodes]
        return node

    def _unfolded(self, child: nodes.Expr) -> nodes.Expr:
        # Jinja prints constant expressions at compile time, and with autoescape it escapes them *before* finalize
        # sees them: `{{ ''.format }}` would print the function's repr, and `{{ '3'|float }}` 3.0 instead of 3.
        # Only constant text is left to be folded; other constants are printed at render time, through finalize.
        if isinstance(child, nodes.TemplateData):
            return child
        try:
            value = child.as_const(self._eval_ctx)
        except Exception:  # noqa: BLE001  as Jinja's code generator does: what does not fold is evaluated later
            return child
        return child if isinstance(value, str) else _helper_call("clarion_checked", child)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _helper_call("clarion_loop", node.iter)
        return node

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return _helper_call("clarion_checked", node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        return _helper_call("clarion_checked", node)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        return _helper_call("clarion_checked", node) if node.ctx == "load" else node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_helper_call("clarion_text", operand) for operand in node.nodes]
        return _helper_call("clarion_checked", node)

    def visit_Include(self, node: nodes.Include) -> NoReturn:
        _refuse(node)

    def visit_Import(self, node: nodes.Import) -> NoReturn:
        _refuse(node)

    def visit_FromImport(self, node: nodes.FromImport) -> NoReturn:
        _refuse(node)

    def visit_Extends(self, node: nodes.Extends) -> NoReturn:
        _refuse(node)


def _refuse(node: nodes.Node) -> NoReturn:
    # There is no loader: a notification template is one self-contained text, and other templates are not files.
    raise TemplateSyntaxError("a template cannot include, import or extend other templates", node.lineno)


def compile_template(env: ClarionSandbox, source: str) -> tuple[Template, frozenset[str]]:
    """Compile `source` hardened, with the top-level names it reads that are not the environment's globals.
    Raises jinja2.TemplateSyntaxError, or another jinja2.TemplateError for a constant expression that fails."""
    tree = env.parse(source)
    names = frozenset(meta.find_undeclared_variables(tree)) - env.globals.keys()
    hardened = _Hardener(env).visit(tree)
    return env.from_string(hardened), names


def template_line(template: Template, error: BaseException) -> int | None:
    """The template line that was running when `error` was raised (the innermost one), if any."""
    line = None
    traceback = error.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == "<template>":
            line = template.get_corresponding_lineno(traceback.tb_lineno)
        traceback = traceback.tb_next
    return line
