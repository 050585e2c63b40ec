"""The rendered Envoy configuration: valid for Envoy itself, parameterised for Kubernetes, and its failure modes
(a slow upstream, no upstream, a port in use) seen by REST and gRPC clients as they should be."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from clarion.core.server import PortInUseError
from clarion.gateway.config import (
    ConsoleFiles,
    GatewayConfig,
    Upstream,
    console_source,
    local_gateway_config,
    render_envoy_config,
    write_gateway_files,
)
from clarion.gateway.descriptors import (
    HEALTH_SERVICE,
    REFLECTION_SERVICES,
    default_descriptor_set_path,
    load_descriptor_set,
    service_names,
)
from clarion.gateway.errors import GatewayError
from clarion.gateway.openapi import OPENAPI_PATH
from clarion.gateway.process import ensure_port_free, run_envoy, validate_envoy_config
from tests.conftest import free_port
from tests.helpers import health_status

pytestmark = pytest.mark.integration

CLARION_SERVICES = (
    "clarion.v1.UserService",
    "clarion.v1.TemplateService",
    "clarion.v1.NotificationService",
    "clarion.v1.AccessService",
    "clarion.v1.InboxService",
    "clarion.v1.SuppressionService",
    "clarion.v1.ProviderEventService",
)


def write(config: GatewayConfig, directory: Path) -> Path:
    return write_gateway_files(
        config, config_path=directory / "envoy.yaml", source_descriptor_set=default_descriptor_set_path()
    )


def local_config(directory: Path, *, grpc_port: int, **changes: Any) -> GatewayConfig:
    config = local_gateway_config(
        listen_host="127.0.0.1",
        listen_port=free_port(),
        grpc_host="127.0.0.1",
        grpc_port=grpc_port,
        services=CLARION_SERVICES,
        descriptor_path=directory / "gateway.binpb",
    )
    return dataclasses.replace(config, **changes)


def kubernetes_config(directory: Path) -> GatewayConfig:
    """As a Kubernetes overlay would render it: one Deployment per service, by DNS name, no admin interface."""
    return GatewayConfig(
        listen_host="0.0.0.0",
        listen_port=8080,
        upstreams=(
            Upstream("users", "users.clarion.svc.cluster.local", 50051, ("clarion.v1.UserService", HEALTH_SERVICE)),
            Upstream("templates", "templates.clarion.svc.cluster.local", 50051, ("clarion.v1.TemplateService",)),
            Upstream(
                "notifications",
                "notifications.clarion.svc.cluster.local",
                50051,
                ("clarion.v1.NotificationService", *REFLECTION_SERVICES),
            ),
        ),
        descriptor_path=directory / "etc" / "gateway.binpb",
        admin_host=None,
        cors_origins=("https://console.example.com",),
    )


def route_clusters(rendered: str) -> dict[str, str]:
    """Route path → its cluster, or "refused" for a route Envoy answers itself."""
    config = yaml.safe_load(rendered)
    http = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes: dict[str, str] = {}
    for route in http["route_config"]["virtual_hosts"][0]["routes"]:
        path = route["match"].get("path") or route["match"]["prefix"]
        routes[path] = route["route"]["cluster"] if "route" in route else "refused"
    return routes


def console_paths() -> list[str]:
    """The paths Envoy answers for the console of this checkout."""
    source = console_source()
    assert source is not None, "a checkout has the console"
    return ["/console", "/console/", *(f"/console/{file['name']}" for file in ConsoleFiles(source, source).files())]


def test_the_local_config_passes_envoy_validate(tmp_path: Path) -> None:
    config_path = write(local_config(tmp_path, grpc_port=50051), tmp_path)

    validate_envoy_config(config_path)
    rendered = config_path.read_text()
    # Leftovers of the template anywhere but in the OpenAPI document, whose descriptions quote Jinja2's syntax.
    template_output = "\n".join(line for line in rendered.splitlines() if 'inline_string: "{' not in line)
    assert "{{" not in template_output
    assert "{%" not in template_output
    assert route_clusters(rendered) == {
        **{f"/{service}/": "clarion" for service in (*CLARION_SERVICES, HEALTH_SERVICE)},
        **{f"/{service}/": "clarion-streams" for service in REFLECTION_SERVICES},
        # Server streaming: its own route, without a timeout, to the streams cluster.
        "/clarion.v1.InboxService/WatchInbox": "clarion-watch",
        f"/{HEALTH_SERVICE}/Watch": "refused",
        OPENAPI_PATH: "refused",
        # The console: a redirect from /console, and each of its files (the index at /console/ too), answered by Envoy.
        **{path: "refused" for path in console_paths()},
        "/": "clarion",
    }
    # Explicit circuit breakers: streams held open can only use up the streams cluster's budget.
    config = yaml.safe_load(rendered)
    limits = {
        c["name"]: c["circuit_breakers"]["thresholds"][0]["max_requests"]
        for c in config["static_resources"]["clusters"]
    }
    assert limits == {"clarion": 4096, "clarion-streams": 256, "clarion-watch": 10_000}
    http = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert http["http2_protocol_options"] == {"max_concurrent_streams": 100}


def test_a_kubernetes_config_routes_each_service_to_its_deployment_and_passes_envoy_validate(tmp_path: Path) -> None:
    config_path = write(kubernetes_config(tmp_path), tmp_path)

    validate_envoy_config(config_path)
    rendered = config_path.read_text()
    assert route_clusters(rendered) == {
        "/clarion.v1.UserService/": "users",
        f"/{HEALTH_SERVICE}/Watch": "refused",
        OPENAPI_PATH: "refused",
        f"/{HEALTH_SERVICE}/": "users",
        "/clarion.v1.TemplateService/": "templates",
        "/clarion.v1.NotificationService/": "notifications",
        **{f"/{service}/": "notifications-streams" for service in REFLECTION_SERVICES},
        "/": "users",
    }
    assert "admin:" not in rendered
    assert "type: STRICT_DNS" in rendered
    assert '"https://console.example.com"' in rendered
    assert f'proto_descriptor: "{tmp_path / "etc" / "gateway.binpb"}"' in rendered


def test_the_admin_interface_is_refused_anywhere_but_loopback(tmp_path: Path) -> None:
    exposed = dataclasses.replace(local_config(tmp_path, grpc_port=50051), admin_host="0.0.0.0")
    with pytest.raises(GatewayError, match="loopback"):
        write(exposed, tmp_path)


def test_a_config_envoy_rejects_fails_validation(tmp_path: Path) -> None:
    config_path = write(local_config(tmp_path, grpc_port=50051), tmp_path)
    (tmp_path / "gateway.binpb").write_bytes(b"not a descriptor set")

    with pytest.raises(GatewayError, match="Envoy rejects"):
        validate_envoy_config(config_path)


def test_the_gateway_descriptor_set_is_gen_plus_a_health_binding(tmp_path: Path) -> None:
    write(local_config(tmp_path, grpc_port=50051), tmp_path)
    generated = load_descriptor_set(default_descriptor_set_path())
    gateway = load_descriptor_set(tmp_path / "gateway.binpb")

    assert list(gateway.file)[: len(generated.file)] == list(generated.file)
    (health_file,) = (f for f in gateway.file if f.package == "grpc.health.v1")
    (check,) = (m for s in health_file.service for m in s.method if m.name == "Check")
    assert check.options.Extensions[annotations_pb2.http].get == "/v1/health"
    assert service_names(gateway, http_only=True) == [*sorted(CLARION_SERVICES), HEALTH_SERVICE]
    assert not set(REFLECTION_SERVICES) & set(service_names(gateway, http_only=True))
    assert isinstance(gateway, descriptor_pb2.FileDescriptorSet)


@contextlib.asynccontextmanager
async def silent_upstream() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers: a hung service."""
    connections: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


def rest_get(port: int, path: str) -> tuple[int, str, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.headers.get("content-type", ""), json.loads(response.read())
    finally:
        connection.close()


async def test_a_hung_service_is_cut_by_the_route_timeout_for_rest_and_grpc(tmp_path: Path) -> None:
    async with silent_upstream() as port:
        config = local_config(tmp_path, grpc_port=port, request_timeout_s=0.5)
        async with run_envoy(write(config, tmp_path), run_dir=tmp_path):
            started = time.monotonic()
            status, content_type, body = await asyncio.to_thread(rest_get, config.listen_port, "/v1/users/ada")
            rest_s = time.monotonic() - started
            async with grpc.aio.insecure_channel(f"127.0.0.1:{config.listen_port}") as channel:
                started = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    # The client's deadline is longer: the route timeout cuts first.
                    await channel.unary_unary("/clarion.v1.UserService/GetUser")(b"", timeout=10)
                grpc_s = time.monotonic() - started

    assert (status, content_type) == (504, "application/json")
    assert body["code"] == 4
    assert body["details"][0]["reason"] == "UPSTREAM_TIMEOUT"
    assert 0.4 < rest_s < 5
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 0.4 < grpc_s < 5


async def test_no_service_behind_envoy_is_a_json_503_for_rest_and_unavailable_for_grpc(tmp_path: Path) -> None:
    config = local_config(tmp_path, grpc_port=free_port())
    async with run_envoy(write(config, tmp_path), run_dir=tmp_path):
        status, content_type, body = await asyncio.to_thread(rest_get, config.listen_port, "/v1/health")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{config.listen_port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_status(channel)

    assert (status, content_type) == (503, "application/json")
    assert (body["code"], body["details"][0]["reason"]) == (14, "UPSTREAM_UNAVAILABLE")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not (caught.value.details() or "").startswith("{")


def test_a_taken_port_is_refused_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port} \\(CLARION_HTTP_PORT\\)"):
            ensure_port_free("127.0.0.1", port, setting="CLARION_HTTP_PORT")


async def test_envoy_refuses_a_taken_port_instead_of_sharing_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        # Even a socket that allows sharing (SO_REUSEPORT) must not get a second listener.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = local_config(tmp_path, grpc_port=free_port(), listen_port=taken.getsockname()[1])
        with pytest.raises(GatewayError, match="exited with code 1 before it was ready"):
            async with run_envoy(write(config, tmp_path), run_dir=tmp_path):
                pass


def http_request(port: int, method: str, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


async def test_the_metrics_listener_serves_envoys_metrics_and_nothing_else_of_the_admin(tmp_path: Path) -> None:
    # As in Kubernetes: the admin interface on loopback and a fixed port, its metrics on a listener of their own.
    config = local_config(tmp_path, grpc_port=free_port(), admin_port=free_port(), metrics_port=free_port())
    assert config.metrics_port is not None
    metrics_port = config.metrics_port
    async with run_envoy(write(config, tmp_path), run_dir=tmp_path):
        status, body = await asyncio.to_thread(http_request, metrics_port, "GET", "/metrics")
        assert status == 200
        assert "envoy_server_live" in body
        for method, path in (("GET", "/stats"), ("POST", "/quitquitquit"), ("POST", "/metrics"), ("GET", "/")):
            assert (await asyncio.to_thread(http_request, metrics_port, method, path))[0] == 404, (method, path)
        assert (await asyncio.to_thread(http_request, metrics_port, "GET", "/metrics"))[0] == 200, "still running"


def test_a_metrics_listener_needs_the_admin_interface_on_a_fixed_port(tmp_path: Path) -> None:
    with pytest.raises(GatewayError, match="admin interface"):
        render_envoy_config(local_config(tmp_path, grpc_port=50051, metrics_port=9464), ["clarion.v1.UserService"])
