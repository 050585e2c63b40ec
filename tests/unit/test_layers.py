"""core/ is plumbing: it imports nothing of Clarion's features and names none of their queues (the delivery core's
queues are clarion.delivery.queues')."""

from __future__ import annotations

import ast
import re
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "services" / "clarion" / "core"
ALLOWED = ("clarion.core", "clarion.v1")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def test_core_imports_only_core_and_the_generated_contracts() -> None:
    found = {path.name: _imports(path) for path in sorted(CORE.glob("*.py"))}
    assert found, "no modules found: the path is wrong"
    offenders = [
        f"{name}: {module}"
        for name, modules in found.items()
        for module in modules
        if module.startswith("clarion") and not module.startswith(ALLOWED)
    ]
    assert not offenders, "\n".join(offenders)


def test_core_names_no_queue_in_code() -> None:
    # A queue name as a string literal (docstrings may show examples); the ast sees only real string constants.
    queue = re.compile(r"^[a-z0-9_-]+\.queue$")
    offenders = [
        f"{path.name}:{node.lineno}: {node.value!r}"
        for path in sorted(CORE.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and queue.match(node.value)
    ]
    assert not offenders, "\n".join(offenders)
    assert queue.match("email.queue")
