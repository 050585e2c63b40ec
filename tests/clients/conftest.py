"""Clients in other languages against a running Clarion (the real services and the real Envoy, in this process)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The running services and Envoy in front of them, from the integration tests' fixtures.
from tests.conftest import free_port
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


@dataclass(frozen=True)
class ClarionUp:
    """`clarion up` running as a real process: the whole local system (services, workers, Envoy, PostgreSQL), as a
    newcomer starts it."""

    grpc_address: str  # host:port of the gRPC server itself
    http_address: str  # host:port of Envoy: REST/JSON, and gRPC through the edge
    api_key: str  # the admin key `clarion up` wrote to <data-dir>/api-key on first start
    data_dir: Path

    @property
    def rest_url(self) -> str:
        return f"http://{self.http_address}"


def _rest_health(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/v1/health")
        response = connection.getresponse()
        return response.status == 200 and json.loads(response.read()) == {"status": "SERVING"}
    except (OSError, ValueError):
        return False  # not listening yet, or not Envoy yet
    finally:
        connection.close()


@contextlib.contextmanager
def running_clarion_up(directory: Path, environment: dict[str, str] | None = None) -> Iterator[ClarionUp]:
    """`clarion up` in `directory` on free ports, with this environment's variables but CLARION_* and then
    `environment`; stopped with SIGTERM when the block ends. Its output is in `directory`/clarion-up.log."""
    grpc_port, http_port = free_port(), free_port()
    variables = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    variables |= {"CLARION_METRICS_PORT": "0", **(environment or {})}
    with (directory / "clarion-up.log").open("w") as log:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "clarion"),
                "up",
                "--port",
                str(grpc_port),
                "--http-port",
                str(http_port),
            ],
            cwd=directory,
            env=variables,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120  # the first start initialises PostgreSQL; slow on a busy machine
            while not _rest_health(http_port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"clarion up did not serve:\n{(directory / 'clarion-up.log').read_text()}")
                time.sleep(0.3)
            yield ClarionUp(
                grpc_address=f"127.0.0.1:{grpc_port}",
                http_address=f"127.0.0.1:{http_port}",
                api_key=(directory / ".clarion" / "api-key").read_text().strip(),
                data_dir=directory / ".clarion",
            )
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def clarion_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClarionUp]:
    """One `clarion up` for the clients' tests, on free ports, stopped with SIGTERM at the end of the session."""
    with running_clarion_up(tmp_path_factory.mktemp("clarion-up")) as up:
        yield up
