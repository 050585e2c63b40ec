"""The Python client package (clients/python) installed alone into a fresh virtualenv, as a caller would install
it, against a real `clarion up`: sync and async, to the gRPC server and through Envoy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from clarion.v1 import notifications_pb2, notifications_pb2_grpc
from tests.clients.conftest import ROOT, ClarionUp

pytestmark = pytest.mark.e2e

PACKAGE = ROOT / "clients" / "python"
SMOKE = Path(__file__).resolve().parent / "python" / "smoke.py"


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding `pip install clients/python` and what it depends on, nothing else."""
    venv = tmp_path_factory.mktemp("client-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(PACKAGE)],
        capture_output=True,
        text=True,
        timeout=400,  # resolves grpcio and protobuf from the package index (or pip's cache)
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    return python


def run(python: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CLARION_", "PYTHON"))}
    return subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        cwd=python.parent,  # not the repository: nothing of it may be importable by accident
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(600)
def test_the_package_alone_holds_the_stubs_and_not_the_server(client_python: Path) -> None:
    probe = run(
        client_python,
        "-c",
        "import importlib.util as u, clarion_client, clarion.v1.notifications_pb2_grpc;"
        "print(u.find_spec('clarion.core') is None, u.find_spec('clarion.v1.clarion') is None)",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["True", "True"]


@pytest.mark.timeout(600)
def test_the_client_sends_and_reads_over_grpc_and_through_envoy(client_python: Path, clarion_up: ClarionUp) -> None:
    result = run(
        client_python,
        str(SMOKE),
        clarion_up.grpc_address,
        clarion_up.http_address,
        env={"CLARION_API_KEY": clarion_up.api_key},
    )
    assert result.returncode == 0, result.stderr
    records = {r["via"]: r for r in (json.loads(line) for line in result.stdout.splitlines())}
    assert set(records) == {"sync-direct", "sync-envoy", "async-direct", "async-envoy"}

    for via in ("sync-direct", "sync-envoy"):
        record = records[via]
        assert (record["replayed"], record["same_id"]) == (True, True), via
        assert record["stored_status"].startswith("NOTIFICATION_STATUS_"), via
        # A null placeholder is refused, named, and raised as InvalidArgument with its field violation.
        assert record["invalid"]["reason"] == "NULL_TEMPLATE_VARIABLES", via
        assert record["invalid"]["fields"] == ["message_data.app_name"], via
        assert record["missing"] == "NOT_FOUND", via
        assert record["scopes"] == ["admin"], via  # GetCaller: `clarion up`'s key
    for via in ("async-direct", "async-envoy"):
        record = records[via]
        assert record["request_id"], via  # the idempotency key the client made up
        assert "template.template_key" in record["invalid"]["fields"], via
    for via, record in records.items():
        assert record["without_key"] == "API_KEY_MISSING", via
        # A user token alone: the inbox's stream starts with its counts, and the count is the token's user's.
        assert record["inbox"] == {"first": "counts", "own": True}, via

    # Each notification is really there, as the client said, read with the server's own stubs.
    with grpc.insecure_channel(clarion_up.grpc_address) as channel:
        stub = notifications_pb2_grpc.NotificationServiceStub(channel)
        for via, record in records.items():
            stored: Any = stub.GetNotification(
                notifications_pb2.GetNotificationRequest(notification_id=record["notification_id"]),
                metadata=[("authorization", f"Bearer {clarion_up.api_key}")],
                timeout=10,
            )
            assert (stored.user_id, stored.template_key) == (record["user_id"], record["template_key"]), via
