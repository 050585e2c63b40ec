"""Clarion as a real process: the `clarion` command in a subprocess, talked to with grpcurl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
CLARION = str(BIN / "clarion")
GRPCURL = str(BIN / "grpcurl")


def grpcurl(address: str, *args: str, timeout_s: float = 20) -> subprocess.CompletedProcess[str]:
    """Run the real grpcurl against a plaintext server."""
    return subprocess.run(
        [GRPCURL, "-plaintext", *args[:-1], address, args[-1]] if args else [GRPCURL, "-plaintext", address],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def wait_until_serving(address: str, process: subprocess.Popen[str], deadline_s: float = 60) -> None:
    """Poll Health/Check until SERVING; fail with the process's output if it dies or takes too long."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"clarion exited with {process.returncode}:\n{output}")
        result = grpcurl(address, "-max-time", "2", "grpc.health.v1.Health/Check")
        if result.returncode == 0 and json.loads(result.stdout)["status"] == "SERVING":
            return
        time.sleep(0.3)
    raise AssertionError(f"{address} not SERVING after {deadline_s}s")


@pytest.fixture
def clarion_process(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Factory: start `clarion <args>` with extra environment; every process is stopped afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
        # A free metrics port unless the test names one: processes run side by side, and next to a `clarion up`.
        environment["CLARION_METRICS_PORT"] = "0"
        environment.update(env or {})
        process = subprocess.Popen(
            [CLARION, *args],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
