"""A plain-HTTP health endpoint for processes without a gRPC server (the dispatcher, channel workers, the sweeper).

Kubernetes probes it with `httpGet`: `GET /healthz` (liveness) and `GET /readyz` (readiness) answer 200 while
`check()` is true and 503 otherwise. HTTP/1.1 with one request per connection, nothing more: a probe needs no
keep-alive, and owning a few dozen lines beats a web framework in every worker image.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Callable

from clarion.core.logging import get_logger
from clarion.core.server import PortInUseError

log = get_logger(__name__)

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
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


def _response(status: int, body: str, *, head: bool = False, allow: str | None = None) -> bytes:
    payload = body.encode()
    headers = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        "Content-Type: text/plain; charset=utf-8",
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


def _answer(method: str, path: str, check: Callable[[], bool]) -> bytes:
    head = method == "HEAD"
    if path not in HEALTH_PATHS:
        return _response(404, "not found\n", head=head)
    if method not in ("GET", "HEAD"):
        return _response(405, "method not allowed\n", allow="GET, HEAD")
    if _healthy(check):
        return _response(200, "ok\n", head=head)
    return _response(503, "unavailable\n", head=head)


async def serve_health(
    *,
    host: str,
    port: int,
    check: Callable[[], bool],
    stop: asyncio.Event,
    on_started: Callable[[int], None] | None = None,
) -> None:
    """Answer `GET /healthz` and `GET /readyz` on `host:port` until `stop` is set: 200 while `check()` is true,
    503 when it is false (or raises); 404 for any other path. `on_started(port)` is called once it listens (with
    the bound port, useful when `port` is 0). Raises PortInUseError when the port is taken."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    method, path = await _read_request(reader)
            except _BadRequest:
                writer.write(_response(400, "bad request\n"))
            else:
                writer.write(_answer(method, path, check))
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
        raise PortInUseError(f"cannot listen on {host}:{port} for health checks: is another server using it?") from exc
    bound_port: int = server.sockets[0].getsockname()[1]
    log.info("health_server_started", address=f"{host}:{bound_port}", paths=sorted(HEALTH_PATHS))
    try:
        if on_started is not None:
            on_started(bound_port)
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        log.info("health_server_stopped")
