"""The workers' HTTP health endpoint, over a real socket, as the kubelet's httpGet probe sees it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY, Counter
from prometheus_client.parser import text_string_to_metric_families

from clarion.core.health_http import serve_health
from clarion.core.server import PortInUseError


class Flag:
    """A health check whose answer the test sets."""

    def __init__(self) -> None:
        self.healthy = True

    def __call__(self) -> bool:
        return self.healthy


@contextlib.asynccontextmanager
async def health_server(check: Callable[[], bool], ready: Callable[[], bool] | None = None) -> AsyncIterator[int]:
    """serve_health on a kernel-chosen loopback port for the block; yields the port, stops and awaits it after."""
    stop = asyncio.Event()
    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_health(host="127.0.0.1", port=0, check=check, stop=stop, on_started=listening.set_result, ready=ready)
    )
    # A server that fails to start ends first: awaiting it raises its error.
    first: set[asyncio.Future[Any]] = {task, listening}
    await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        await task
    try:
        yield listening.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw` on a new connection; the status, the headers (lower-cased names) and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split(" ")[1]), headers, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 10.0.0.1:8081\r\nUser-Agent: kube-probe/1.32\r\n\r\n".encode()


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_a_probe_gets_200_while_healthy_and_503_when_not(path: str) -> None:
    check = Flag()
    async with health_server(check) as port:
        healthy = await request(port, get(path))
        check.healthy = False
        unhealthy = await request(port, get(path))

    assert (healthy[0], healthy[2]) == (200, b"ok\n")
    assert healthy[1]["content-length"] == "3"
    assert healthy[1]["connection"] == "close"
    assert (unhealthy[0], unhealthy[2]) == (503, b"unavailable\n")


async def test_a_check_that_raises_is_unhealthy_not_a_dropped_connection() -> None:
    def broken() -> bool:
        raise RuntimeError("database pool closed")

    async with health_server(broken) as port:
        status, _, _ = await request(port, get("/healthz"))

    assert status == 503


async def test_the_query_string_is_ignored_and_head_has_no_body() -> None:
    async with health_server(Flag()) as port:
        with_query = await request(port, get("/healthz?verbose=1"))
        head = await request(port, get("/healthz", method="HEAD"))

    assert with_query[0] == 200
    assert (head[0], head[1]["content-length"], head[2]) == (200, "3", b"")


async def test_an_unknown_path_is_404_and_another_method_405() -> None:
    async with health_server(Flag()) as port:
        unknown = await request(port, get("/varz"))
        post = await request(port, get("/healthz", method="POST"))

    assert unknown[0] == 404
    assert (post[0], post[1]["allow"]) == (405, "GET, HEAD")


async def test_metrics_are_the_prometheus_registry_in_text_format() -> None:
    counter = Counter("clarion_test_health_scrapes_total", "A counter only this test moves.")
    counter.inc(3)
    try:
        async with health_server(Flag()) as port:
            status, headers, body = await request(port, get("/metrics"))
            post = await request(port, get("/metrics", method="POST"))
    finally:
        REGISTRY.unregister(counter)

    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=")
    samples = {s.name: s.value for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    assert samples["clarion_test_health_scrapes_total"] == 3.0
    assert post[0] == 405


async def test_garbage_gets_400() -> None:
    async with health_server(Flag()) as port:
        status, _, _ = await request(port, b"\x16\x03\x01 not http\r\n\r\n")

    assert status == 400


async def test_a_silent_client_does_not_hold_up_the_next_probe() -> None:
    async with health_server(Flag()) as port:
        _, silent = await asyncio.open_connection("127.0.0.1", port)
        try:
            status, _, _ = await request(port, get("/healthz"))
        finally:
            silent.close()
            await silent.wait_closed()

    assert status == 200


async def test_it_stops_listening_when_stop_is_set() -> None:
    async with health_server(Flag()) as port:
        assert (await request(port, get("/healthz")))[0] == 200

    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_taken_port_is_refused_with_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port}"):
            await serve_health(host="127.0.0.1", port=port, check=Flag(), stop=asyncio.Event())


async def test_readiness_also_asks_ready_while_liveness_does_not() -> None:
    # A worker whose broker is away: alive (a restart would not help), not ready.
    alive, connected = Flag(), Flag()
    async with health_server(alive, ready=connected) as port:
        connected.healthy = False
        live = await request(port, b"GET /healthz HTTP/1.1\r\n\r\n")
        ready = await request(port, b"GET /readyz HTTP/1.1\r\n\r\n")
        assert (live[0], ready[0]) == (200, 503)
        connected.healthy = True
        assert (await request(port, b"GET /readyz HTTP/1.1\r\n\r\n"))[0] == 200
        alive.healthy = False
        assert (await request(port, b"GET /readyz HTTP/1.1\r\n\r\n"))[0] == 503
