"""A scripted HTTP server on loopback, standing in for a provider's API (never for our own code).

It runs in a background thread because the provider clients under test are synchronous and run in threads of
their own; the test's event loop stays free. Every request is recorded; each route decides the reply.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# How long a "hang" reply holds the connection at most; stop() releases it sooner.
HANG_LIMIT_S = 30.0


@dataclass(frozen=True)
class Reply:
    """What a route answers. `body` is sent as JSON unless it is bytes; `hang` never answers."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass(frozen=True)
class Request:
    """One request as the server saw it; header names are lower-cased."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


Route = Callable[[Request], Reply]


class FakeHttpServer:
    """`with FakeHttpServer() as server: server.route("/path", handler)`; `server.url` is its base URL."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        # Exceptions raised by a route: a bug in the fake must fail the test, not look like a provider error.
        self.route_errors: list[BaseException] = []
        self._routes: dict[str, Route] = {}
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-http", daemon=True
        )

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>"""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def route(self, path: str, handler: Route) -> None:
        """Answer requests for exactly `path` (query string ignored) with `handler`."""
        self._routes[path] = handler

    def requests_to(self, path: str) -> list[Request]:
        """The recorded requests for `path`."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> FakeHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        assert not self.route_errors, f"the fake server's route failed: {self.route_errors!r}"

    def _answer(self, request: Request) -> Reply | None:
        with self._lock:
            self.requests.append(request)
        route = self._routes.get(request.path)
        if route is None:
            return Reply(404, {"error": f"no route for {request.path}"})
        try:
            reply = route(request)
        except Exception as exc:  # noqa: BLE001 - recorded and re-raised in the test by __exit__
            self.route_errors.append(exc)
            return Reply(599, {"error": repr(exc)})
        if reply.hang:
            self._release.wait(HANG_LIMIT_S)
            return None
        return reply


def _handler_class(fake: FakeHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self._handle()

        def do_GET(self) -> None:
            self._handle()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            request = Request(self.command, self.path.split("?", 1)[0], headers, body)
            reply = fake._answer(request)
            if reply is None:  # a hang: drop the connection without a word
                self.close_connection = True
                return
            data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: the fake's access log is the `requests` list."""

    return Handler
