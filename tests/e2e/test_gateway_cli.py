"""`clarion up` with its Envoy: REST and gRPC on the HTTP port, and no Envoy left behind however clarion ends."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clarion.gateway.process import validate_envoy_config
from tests.conftest import free_port
from tests.e2e.conftest import grpcurl
from tests.integration.gateway.test_rest_users import SEED_USER

pytestmark = pytest.mark.e2e


def rest(port: int, method: str, path: str, body: Any = None, *, api_key: str | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        if api_key is not None:
            headers["authorization"] = f"Bearer {api_key}"
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def wait_until_rest_serves(port: int, process: subprocess.Popen[str], deadline_s: float = 60) -> None:
    """Poll GET /v1/health until 200; fail with clarion's output if it exits or takes too long."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"clarion exited with {process.returncode}:\n{output}")
        try:
            if rest(port, "GET", "/v1/health") == (200, {"status": "SERVING"}):
                return
        except (OSError, ValueError):
            pass  # not listening yet, or not Envoy yet
        time.sleep(0.2)
    raise AssertionError(f"REST on port {port} not serving after {deadline_s}s")


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (dead, waiting for its new parent to reap it) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_gone(pid: int, deadline_s: float = 15) -> None:
    deadline = time.monotonic() + deadline_s
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still running after {deadline_s}s"
        time.sleep(0.1)


def envoy_children(parent_pid: int) -> list[int]:
    """Pids of the `envoy` processes whose parent is `parent_pid`."""
    found = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if name == "envoy" and ppid == parent_pid:
            found.append(int(stat_path.parent.name))
    return found


def test_up_serves_rest_through_envoy_and_sigterm_stops_envoy_too(
    clarion_process: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    grpc_port, http_port = free_port(), free_port()
    state = tmp_path / "state"
    process = clarion_process("up", "--port", str(grpc_port), "--http-port", str(http_port), "--data-dir", str(state))
    wait_until_rest_serves(http_port, process)
    (envoy_pid,) = envoy_children(process.pid)
    api_key = (state / "api-key").read_text().strip()  # the admin key `clarion up` made on first start

    status, user = rest(http_port, "POST", "/v1/users", SEED_USER, api_key=api_key)
    assert status == 200, user
    assert rest(http_port, "GET", f"/v1/users/{user['user_id']}", api_key=api_key) == (200, user)
    status, error = rest(http_port, "GET", "/v1/nowhere")
    assert (status, error["code"]) == (404, 5)
    for address in (f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"):
        listed = grpcurl(address, "list")
        assert listed.returncode == 0, listed.stderr
        assert "clarion.v1.UserService" in listed.stdout.split()
    # What Envoy runs is on disk, and Envoy accepts it.
    validate_envoy_config(state / "envoy.yaml")

    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"REST      http://127.0.0.1:{http_port}" in output
    assert f"gRPC      127.0.0.1:{grpc_port}" in output
    # The server drained before Envoy stopped, so in-flight REST calls kept their proxy.
    assert output.index("grpc_server_stopped") < output.index("envoy_stopped")
    wait_until_gone(envoy_pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is a Linux feature")
def test_envoy_dies_with_clarion_even_when_clarion_is_killed(
    clarion_process: Callable[..., subprocess.Popen[str]], make_database: Callable[..., str], tmp_path: Path
) -> None:
    http_port = free_port()
    # An outside database: a killed clarion cannot stop an embedded one.
    process = clarion_process(
        "up",
        "--port",
        str(free_port()),
        "--http-port",
        str(http_port),
        "--data-dir",
        str(tmp_path / "state"),
        env={"CLARION_DATABASE_URL": make_database()},
    )
    wait_until_rest_serves(http_port, process)
    (envoy_pid,) = envoy_children(process.pid)

    process.kill()
    process.wait(timeout=10)

    wait_until_gone(envoy_pid)


def test_up_refuses_a_taken_http_port_before_starting_anything(
    clarion_process: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = clarion_process(
            "up", "--port", str(free_port()), "--http-port", str(port), "--data-dir", str(tmp_path / "state")
        )
        output, _ = process.communicate(timeout=30)

    assert process.returncode == 1, output
    assert f"cannot listen on 127.0.0.1:{port} (CLARION_HTTP_PORT)" in output
    assert not (tmp_path / "state" / "postgres").exists(), "nothing was started"
