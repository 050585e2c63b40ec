"""Clients in other languages against a running Clarion (the real services and the real Envoy, in this process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# The running services and Envoy in front of them, from the integration tests' fixtures.
from tests.integration.conftest import (  # noqa: F401 - fixtures, by name
    clarion,
    migrated_database,
    start_clarion,
    template_processes,
)
from tests.integration.gateway.conftest import gateway, start_gateway  # noqa: F401 - fixtures, by name

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def googleapis_protos() -> Path:
    """third_party/googleapis, which clients that load protos/ need for google/api and google/rpc (`make
    googleapis` makes it; so does this fixture, from the installed wheel, when it is missing)."""
    directory = ROOT / "third_party" / "googleapis"
    if not (directory / "google" / "api" / "annotations.proto").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--googleapis-only"], check=True)
    return directory
