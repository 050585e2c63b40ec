"""A plain-HTTP endpoint for probes and Prometheus: the dispatcher, channel workers and the sweeper serve it on their
health port, the gRPC services on their metrics port.

Kubernetes probes it with `httpGet`: `GET /healthz` (liveness) answers 200 while `check()` is true and 503
otherwise; `GET /readyz` (readiness) also needs `ready()`, when given: a worker whose broker is away is alive (it
reconnects by itself, a restart would not help) but not ready. `GET /metrics` is the process's Prometheus registry
in the text format. HTTP/1.1 with one request per connection, nothing more: a probe or a scrape needs no keep-alive,
and owning a few dozen lines beats a web framework in every worker image.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from clarion.core.logging import get_logger
from clarion.core.server import PortInUseError

log = get_logger(__name__)

LIVE_PATH, READY_PATH = "/healthz", "/readyz"
HEALTH_PATHS = frozenset({LIVE_PATH, READY_PATH})
METRICS_PATH = "/metrics"
# A client that has not sent its request within this is dropped: the kubelet sends at once, and its own timeout
# (timeoutSeconds, 1 s by default) has long passed by then.
REQUEST_TIMEOUT_S = 5.0
# A probe's request is a line and a handful of headers; anything longer is not a probe.
_MAX_LINE_BYTES = 8 * 1024
_MAX_HEADER_LINES = 100
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class _BadRequest(Exception):
    """The bytes on the connection are not an HTTP request we answer."""


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        raise _BadRequest("connection closed mid-request") from exc
    except asyncio.LimitOverrunError as exc:
        raise _BadRequest("line too long") from exc
    return line.rstrip(b"\r\n")


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and path (query string dropped) of one request; its headers are read and ignored."""
    request_line = await _read_line(reader)
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _BadRequest("not an HTTP/1.x request line")
    for _ in range(_MAX_HEADER_LINES):
        if not await _read_line(reader):
            break
    else:
        raise _BadRequest("too many header lines")
    method, target = parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace")
    return method, target.split("?", 1)[0]


def _response(
    status: int,
    body: str | bytes,
    *,
    head: bool = False,
    allow: str | None = None,
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    payload = body.encode() if isinstance(body, str) else body
    headers = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(payload)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if allow is not None:
        headers.append(f"Allow: {allow}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + (b"" if head else payload)


def _healthy(check: Callable[[], bool]) -> bool:
    """`check()`, where an exception counts as unhealthy: a probe must always get an answer."""
    try:
        return bool(check())
    except Exception:
        log.exception("health_check_failed")
        return False


def _answer(method: str, path: str, check: Callable[[], bool], ready: Callable[[], bool] | None = None) -> bytes:
    head = method == "HEAD"
    if path not in HEALTH_PATHS and path != METRICS_PATH:
        return _response(404, "not found\n", head=head)
    if method not in ("GET", "HEAD"):
        return _response(405, "method not allowed\n", allow="GET, HEAD")
    if path == METRICS_PATH:
        return _response(200, generate_latest(REGISTRY), head=head, content_type=CONTENT_TYPE_LATEST)
    if _healthy(check) and (path != READY_PATH or ready is None or _healthy(ready)):
        return _response(200, "ok\n", head=head)
    return _response(503, "unavailable\n", head=head)


async def serve_health(
    *,
    host: str,
    port: int,
    check: Callable[[], bool],
    stop: asyncio.Event,
    on_started: Callable[[int], None] | None = None,
    ready: Callable[[], bool] | None = None,
) -> None:
    """Answer `GET /healthz` and `GET /readyz` on `host:port` until `stop` is set: 200 while `check()` is true,
    503 when it is false (or raises); `GET /metrics` with the Prometheus registry; 404 for any other path.
    `on_started(port)` is called once it listens (with the bound port, useful when `port` is 0). Raises
    PortInUseError when the port is taken."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    method, path = await _read_request(reader)
            except _BadRequest:
                writer.write(_response(400, "bad request\n"))
            else:
                writer.write(_answer(method, path, check, ready))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that left or never spoke gets nothing; the next probe is a new connection
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    try:
        server = await asyncio.start_server(handle, host, port, limit=_MAX_LINE_BYTES)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise PortInUseError(
            f"cannot listen on {host}:{port} for health checks and metrics: is another server using it? Choose "
            "another with CLARION_METRICS_PORT (CLARION_HEALTH_PORT for a worker), or `clarion up --metrics-port`; "
            "0 takes a free one"
        ) from exc
    bound_port: int = server.sockets[0].getsockname()[1]
    log.info("health_server_started", address=f"{host}:{bound_port}", paths=sorted([*HEALTH_PATHS, METRICS_PATH]))
    try:
        if on_started is not None:
            on_started(bound_port)
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        log.info("health_server_stopped")


async def start_health_server(
    *,
    host: str,
    port: int,
    check: Callable[[], bool],
    stop: asyncio.Event,
    ready: Callable[[], bool] | None = None,
) -> tuple[asyncio.Task[None], int]:
    """`serve_health` as a task, returned with its bound port once it listens; a server that cannot start raises
    here (PortInUseError), so a process fails at start instead of running without probes or metrics."""
    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_health(host=host, port=port, check=check, stop=stop, on_started=listening.set_result, ready=ready),
        name="http",
    )
    first: set[asyncio.Future[Any]] = {task, listening}
    await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    if not listening.done():
        await task  # it ended before listening: raise its error
        raise RuntimeError("the health server stopped before it listened")
    return task, listening.result()
