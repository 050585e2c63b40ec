"""Every overlay, rendered by `kubectl kustomize`, is valid Kubernetes: `kubernetes-validate --strict` rejects unknown
fields as well as wrong types, against the newest API the tool knows and the oldest one the manifests need."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.conftest import OVERLAYS, require_tool

# 1.30: the oldest with the preStop `sleep` action on by default (the gRPC services and Envoy use it).
OLDEST_KUBERNETES = "1.30.0"
# Custom resources have no schema in the tool; it warns about them, and these are the only ones expected.
CUSTOM_KINDS = {
    "ScaledObject": "keda.sh/",
    "TriggerAuthentication": "keda.sh/",
    "PodMonitor": "monitoring.coreos.com/",
    "PrometheusRule": "monitoring.coreos.com/",
}


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    """The kubernetes-validate command."""
    return require_tool("kubernetes-validate", "pip install kubernetes-validate")


@pytest.mark.parametrize("kubernetes_version", [None, OLDEST_KUBERNETES], ids=["newest", "oldest"])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_passes_strict_validation(
    overlay: str,
    kubernetes_version: str | None,
    render: Callable[[str], str],
    kubernetes_validate: str,
    tmp_path: Path,
) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(render(overlay))
    version = ["--kubernetes-version", kubernetes_version] if kubernetes_version else []

    result = subprocess.run(
        [kubernetes_validate, "--strict", "--quiet", *version, str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    lines = [line for line in result.stdout.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("WARN")]
    assert (result.returncode, errors) == (0, []), result.stdout + result.stderr
    for warning in lines:
        assert any(f"kind {kind} with api version {group}" in warning for kind, group in CUSTOM_KINDS.items()), warning
