"""Envoy's configuration for the REST/gRPC edge, rendered from the one template, gateway/envoy.yaml.j2.

A GatewayConfig says where Envoy listens and which gRPC upstream serves which service; `render_envoy_config` turns
it into Envoy's YAML, and `write_gateway_files` also writes the descriptor set the transcoder reads. Local mode uses
`local_gateway_config` (one upstream: the local server); Kubernetes passes one upstream per Deployment.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import jinja2

from clarion.contracts import services
from clarion.core.errors import ERROR_DOMAIN
from clarion.gateway.descriptors import (
    HEALTH_SERVICE,
    REFLECTION_SERVICES,
    gateway_descriptor_set,
    load_descriptor_set,
    service_names,
)
from clarion.gateway.errors import GatewayError
from clarion.gateway.openapi import OPENAPI_PATH, render_openapi
from clarion.keys.tokens import KEY_PREFIX, SERVICE_KEY_ID_PREFIX

# Found in a source checkout or an editable install; a wheel must ship them next to this module.
_ROOT = Path(__file__).resolve().parents[3]
TEMPLATE_CANDIDATES = (Path(__file__).with_name("envoy.yaml.j2"), _ROOT / "gateway" / "envoy.yaml.j2")
# The operator console's static files (console/ in a checkout, clarion/console in a wheel), served at /console/.
CONSOLE_CANDIDATES = (Path(__file__).parent.parent / "console", _ROOT / "console")
CONSOLE_PATH = "/console/"
# What a console file is served as, by its extension; a file of another kind is not served.
CONSOLE_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
# The console talks to this origin's REST edge only, runs only its own scripts and styles, and frames only its own
# sandboxed previews (srcdoc iframes); no page may frame it.
CONSOLE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LocalReply:
    """How one of Envoy's own HTTP error replies reads as a google.rpc.Status: its code and ErrorInfo reason."""

    http_status: int
    grpc_code: int
    reason: str
    op: str = "EQ"


# google.rpc.Code numbers, with the HTTP status each maps to (google/rpc/code.proto). The last one catches the rest.
LOCAL_REPLIES: tuple[LocalReply, ...] = (
    LocalReply(400, 3, "BAD_REQUEST"),  # INVALID_ARGUMENT: bad JSON, unknown query parameter or field
    LocalReply(401, 16, "UNAUTHENTICATED"),
    LocalReply(403, 7, "PERMISSION_DENIED"),
    LocalReply(404, 5, "UNKNOWN_PATH"),  # NOT_FOUND: no RPC has this method and path
    LocalReply(408, 4, "REQUEST_TIMEOUT"),  # DEADLINE_EXCEEDED: the client was too slow to send the request
    LocalReply(413, 8, "REQUEST_TOO_LARGE"),  # RESOURCE_EXHAUSTED, as gRPC says of a message over the limit
    LocalReply(429, 8, "RATE_LIMITED"),  # RESOURCE_EXHAUSTED
    LocalReply(431, 8, "HEADERS_TOO_LARGE"),
    LocalReply(500, 13, "INTERNAL"),
    LocalReply(501, 12, "NOT_IMPLEMENTED"),
    LocalReply(502, 14, "UPSTREAM_UNAVAILABLE"),  # UNAVAILABLE: retrying may work
    LocalReply(503, 14, "UPSTREAM_UNAVAILABLE"),
    LocalReply(504, 4, "UPSTREAM_TIMEOUT"),  # DEADLINE_EXCEEDED
    LocalReply(400, 2, "GATEWAY_ERROR", op="GE"),  # UNKNOWN: any other 4xx or 5xx
)

# Envoy's own replies to native gRPC clients become a grpc-status by the gRPC spec's HTTP mapping, which knows no 413
# (UNKNOWN); gRPC says RESOURCE_EXHAUSTED of a message over the limit.
NATIVE_GRPC_STATUSES: dict[int, int] = {413: 8}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Envoy's token bucket: at most `max_tokens` requests at once, `tokens_per_fill` more every `fill_interval_s`."""

    max_tokens: int = 2000
    tokens_per_fill: int = 100
    fill_interval_s: float = 0.1


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """Token buckets per client, in each Envoy process, on top of the flood guard. Envoy cannot tell a real key
    from a made-up one, so every bucket is also per remote address: one per address for all its requests; one per
    address and key id for requests carrying a key-shaped `Bearer clr_<id>_…` (someone elsewhere presenting a
    victim's public id spends a bucket of their own); and a much smaller one per address for requests without a
    key. Health is in none of them, so probes answer through a flood from their own address. Each bucket holds
    `*_requests`, and gets `*_per_fill` back every `fill_interval_s`."""

    address_requests: int = 2000
    address_per_fill: int = 100  # 1,000 a second
    key_requests: int = 1000
    key_per_fill: int = 50  # 500 a second
    anonymous_requests: int = 100
    anonymous_per_fill: int = 2  # 20 a second
    fill_interval_s: float = 0.1
    # Buckets kept (the least recently used go first): ids and addresses are the client's to choose.
    max_clients: int = 10_000


@dataclass(frozen=True, slots=True)
class Upstream:
    """A gRPC backend: Envoy's cluster name for it, its address, and the gRPC services it serves."""

    name: str
    host: str
    port: int
    services: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConsoleFiles:
    """The console's files: read from `source` when the config is rendered (which files, how large), and by Envoy
    from `served_from` (the same folder locally; where the gateway-console ConfigMap is mounted in Kubernetes)."""

    source: Path
    served_from: PurePath

    def files(self) -> list[dict[str, Any]]:
        """Each file Envoy answers for: its name, where Envoy reads it, its content type and size."""
        return [
            {
                "name": path.name,
                "filename": str(self.served_from / path.name),
                "content_type": CONSOLE_TYPES[path.suffix],
                "size_bytes": path.stat().st_size,
            }
            for path in sorted(self.source.iterdir())
            # Regular files only: a symlink could point Envoy at any file outside the folder.
            if path.is_file()
            and not path.is_symlink()
            and not path.name.startswith(".")
            and path.suffix in CONSOLE_TYPES
        ]


def console_source() -> Path | None:
    """The console's folder in this checkout or wheel; None when it has none."""
    return next((path for path in CONSOLE_CANDIDATES if (path / "index.html").is_file()), None)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything that differs between deployments of the edge; the rest is fixed in the template."""

    listen_host: str
    listen_port: int
    upstreams: tuple[Upstream, ...]
    # The descriptor set Envoy reads: gen/clarion.binpb plus the /v1/health binding (see write_gateway_files).
    descriptor_path: Path
    # None: no admin interface at all. Port 0 lets the kernel choose (Envoy writes it to --admin-address-path).
    admin_host: str | None = "127.0.0.1"
    admin_port: int = 0
    # A listener on listen_host serving only GET /metrics (the admin interface's /stats/prometheus) for Prometheus;
    # None: none. Needs the admin interface on a fixed port.
    metrics_port: int | None = None
    # Browser origins allowed to call the API; "*" is any origin (local mode's default), none is no browser page.
    cors_origins: tuple[str, ...] = ("*",)
    request_timeout_s: float = 10.0
    health_timeout_s: float = 3.0
    # A stream (reflection) that sends nothing for this long is cut: grpcurl's finish in milliseconds.
    stream_idle_timeout_s: float = 60.0
    request_headers_timeout_s: float = 10.0
    connect_timeout_s: float = 1.0
    max_request_bytes: int = MIB
    max_connections: int = 10_000
    # Circuit breakers, per upstream. Unary calls and streams have clusters of their own, so that streams held open
    # (which anyone may start: reflection needs no key) can never use up what calls need. Envoy's default, 1,024
    # requests per cluster for both together, let 1,024 anonymous streams turn every call into a 503.
    max_requests: int = 4_096
    max_pending_requests: int = 1_024
    max_streams: int = 256
    # Clarion's own streams (WatchInbox: one per end user with the inbox open) have a cluster of their own too: they
    # need a key or a user token, and a product has many users, so their budget is larger and apart from the
    # anonymous reflection streams'. Each server process holds at most CLARION_INBOX_MAX_WATCHERS of them.
    max_watch_streams: int = 10_000
    # Per client connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS): one connection cannot hold more than this.
    max_streams_per_connection: int = 100
    cors_max_age_s: int = 86_400
    local_replies: tuple[LocalReply, ...] = field(default=LOCAL_REPLIES)
    # The flood guard (local_ratelimit): one token bucket per Envoy process for every request, REST or gRPC, refilled
    # with `tokens_per_fill` every `fill_interval_s` (1,000/s, bursts of 2,000). Per-key quotas are the services'.
    # None: no flood guard.
    rate_limit: RateLimit | None = RateLimit()
    # Buckets per key and per anonymous address (see ClientLimits); None: the flood guard only (with keys off, where
    # nothing tells callers apart).
    client_limits: ClientLimits | None = ClientLimits()
    # Proxies in front of Envoy whose X-Forwarded-For is trusted to name the client (an Ingress: 1). With 0, the
    # client is the connection's peer; behind a proxy every anonymous caller would then share one bucket.
    trusted_proxy_hops: int = 0
    # The operator console at /console/ (static files Envoy answers itself); None: none.
    console: ConsoleFiles | None = None


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    return host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)


STREAMS_SUFFIX = "-streams"
WATCH_SUFFIX = "-watch"
# Health's Watch is a stream that never ends, for a client that wants pushes; nothing at the edge needs it (probes
# and clients call Check), and every one held open costs the edge a stream. Envoy's 404 reaches a gRPC client as
# UNIMPLEMENTED.
_NOT_AT_THE_EDGE = ("Watch",)


# Clarion's server-streaming methods (`clarion.v1.InboxService/WatchInbox`): each has a route of its own, without a
# timeout, to its upstream's watch cluster.
STREAMING_METHODS = tuple(
    f"{service.full_name}/{method.name}"
    for service in services()
    for method in service.methods
    if method.server_streaming
)


def _serves_reflection(upstream: Upstream) -> bool:
    return any(service in upstream.services for service in REFLECTION_SERVICES)


def _serves_watches(upstream: Upstream) -> bool:
    return any(method.split("/")[0] in upstream.services for method in STREAMING_METHODS)


def _routes(config: GatewayConfig) -> list[dict[str, Any]]:
    """One route per gRPC service, to the first upstream that serves it: unary calls with a timeout, to the
    upstream's cluster; streams without one, reflection's to its streams cluster and Clarion's (WatchInbox) to its
    watch cluster; health's Watch refused."""
    routes: list[dict[str, Any]] = []
    seen: set[str] = set()
    unary = {"timeout": _duration(config.request_timeout_s), "streaming": False}
    stream = {"timeout": "0s", "streaming": True}
    for upstream in config.upstreams:
        for service in upstream.services:
            if service in seen:
                continue
            seen.add(service)
            prefix = f"/{service}/"
            if service == HEALTH_SERVICE:
                for method in _NOT_AT_THE_EDGE:
                    routes.append({"match": "path", "path": prefix + method, "refuse": f"{service}/{method}"})
                check = {"timeout": _duration(config.health_timeout_s), "streaming": False}
                routes.append({"match": "prefix", "path": prefix, "cluster": upstream.name, **check})
            elif service in REFLECTION_SERVICES:
                cluster = upstream.name + STREAMS_SUFFIX
                routes.append({"match": "prefix", "path": prefix, "cluster": cluster, **stream})
            else:
                for method in STREAMING_METHODS:
                    if method.startswith(prefix[1:]):
                        cluster = upstream.name + WATCH_SUFFIX
                        routes.append({"match": "path", "path": "/" + method, "cluster": cluster, **stream})
                routes.append({"match": "prefix", "path": prefix, "cluster": upstream.name, **unary})
    return routes


def _clusters(config: GatewayConfig) -> list[dict[str, Any]]:
    """Up to three clusters per upstream, the same endpoint behind each, each with its own limits: calls, anonymous
    streams (reflection), and Clarion's streams (WatchInbox)."""
    clusters = []
    for upstream in config.upstreams:
        kind = "STATIC" if _is_ip(upstream.host) else "STRICT_DNS"
        endpoint = {"host": upstream.host, "port": upstream.port, "type": kind}
        limits = {"max_pending_requests": config.max_pending_requests, "max_retries": 3}
        clusters.append({"name": upstream.name, **endpoint, **limits, "max_requests": config.max_requests})
        if _serves_reflection(upstream):
            name = upstream.name + STREAMS_SUFFIX
            clusters.append({"name": name, **endpoint, **limits, "max_requests": config.max_streams})
        if _serves_watches(upstream):
            name = upstream.name + WATCH_SUFFIX
            clusters.append({"name": name, **endpoint, **limits, "max_requests": config.max_watch_streams})
    return clusters


# A key-shaped authorization header, and the key id inside it (the rest of the header is the secret). The id never
# holds `-` here: service keys (`clr_svc-…`) are refused at the edge, and count as anonymous until then.
# Any scheme word will do for the bucket: the services refuse what is not `Bearer` (RE2's default program size
# budget, 100, leaves no room for spelling it case-insensitively).
_KEY_SHAPED = r"^\w+\s+clr_[a-z0-9]+_.*$"
# For header_to_metadata's rewrite: the id, or "" (and no metadata) for any other header; the alternation makes the
# whole value match either way, so nothing of a header that is not a key is kept.
_KEY_ID_REWRITE = r"^(?:\w+\s+clr_([a-z0-9]+)_.*|.*)$"
# Probes and status checks: never in the anonymous bucket. (The OpenAPI document and the console's files are
# anonymous requests like any other: 70 KB answers must not escape the per-address limit.)
_HEALTH_PATHS = r"^/(v1/health|grpc\.health\.v1\.Health/Check)(\?.*)?$"


def _client_limits(limits: ClientLimits | None) -> dict[str, Any] | None:
    if limits is None:
        return None
    buckets = {
        "address": (limits.address_requests, limits.address_per_fill),
        "key": (limits.key_requests, limits.key_per_fill),
        "anonymous": (limits.anonymous_requests, limits.anonymous_per_fill),
    }
    if min(min(pair) for pair in buckets.values()) < 1 or limits.fill_interval_s < 0.05 or limits.max_clients < 1:
        raise GatewayError(f"client limits need counts >= 1 and a fill interval >= 0.05 s: {limits}")
    return {
        **{name: {"max_tokens": size, "tokens_per_fill": fill} for name, (size, fill) in buckets.items()},
        "fill_interval": _duration(limits.fill_interval_s),
        "max_clients": limits.max_clients,
        "key_shaped": _KEY_SHAPED,
        "key_id_rewrite": _KEY_ID_REWRITE,
        "health_paths": _HEALTH_PATHS,
    }


def _rate_limit(limit: RateLimit | None) -> dict[str, Any] | None:
    if limit is None:
        return None
    if limit.max_tokens < 1 or limit.tokens_per_fill < 1 or limit.fill_interval_s < 0.05:
        # Envoy refuses a fill interval under 50 ms.
        raise GatewayError(f"rate limit needs tokens >= 1 and a fill interval >= 0.05 s: {limit}")
    return {
        "max_tokens": limit.max_tokens,
        "tokens_per_fill": limit.tokens_per_fill,
        "fill_interval": _duration(limit.fill_interval_s),
        # Retry-After is whole seconds: the time one fill takes, rounded up.
        "retry_after_s": max(1, math.ceil(limit.fill_interval_s)),
    }


def _origin_matcher(origin: str) -> dict[str, Any]:
    return {"safe_regex": {"regex": ".*"}} if origin == "*" else {"exact": origin}


def _template() -> jinja2.Template:
    for path in TEMPLATE_CANDIDATES:
        if path.is_file():
            environment = jinja2.Environment(
                undefined=jinja2.StrictUndefined,
                keep_trailing_newline=True,
                # YAML, not HTML: escaping would corrupt it. Every string value goes through `tojson` instead.
                autoescape=False,  # noqa: S701
            )
            return environment.from_string(path.read_text(encoding="utf-8"))
    raise GatewayError(f"Envoy template not found (looked for {', '.join(map(str, TEMPLATE_CANDIDATES))})")


def render_envoy_config(
    config: GatewayConfig, transcoded_services: Sequence[str], *, openapi: str | None = None
) -> str:
    """Envoy's YAML for `config`; `transcoded_services` are the services the REST mapping covers, and `openapi` the
    document Envoy serves at GET /v1/openapi.json (none: no such route)."""
    names = [upstream.name for upstream in config.upstreams]
    if not names or len(set(names)) != len(names):
        raise GatewayError(f"upstream names must be present and distinct: {names}")
    if config.admin_host is not None and not _is_loopback(config.admin_host):
        raise GatewayError(f"Envoy's admin interface must listen on loopback, not {config.admin_host}")
    if config.client_limits is not None and config.rate_limit is None:
        raise GatewayError("client limits live in the flood guard's filter: set rate_limit too, or neither")
    admin = {"host": config.admin_host, "port": config.admin_port} if config.admin_host else None
    if config.metrics_port is not None and (admin is None or not config.admin_port):
        raise GatewayError("the metrics listener reads the admin interface: give it a host and a fixed port")
    metrics = {"host": config.listen_host, "port": config.metrics_port} if config.metrics_port is not None else None
    console_files = config.console.files() if config.console is not None else []
    return _template().render(
        admin=admin,
        metrics=metrics,
        listen={"host": config.listen_host, "port": config.listen_port},
        max_connections=config.max_connections,
        request_headers_timeout=_duration(config.request_headers_timeout_s),
        local_replies=config.local_replies,
        native_grpc_statuses=NATIVE_GRPC_STATUSES,
        error_domain=ERROR_DOMAIN,
        cors={
            "origins": [_origin_matcher(origin) for origin in config.cors_origins],
            "methods": "GET, POST, PATCH, DELETE, OPTIONS",
            "allow_headers": "authorization, content-type, x-request-id, x-idempotency-key",
            "expose_headers": "x-request-id",
            "max_age_s": config.cors_max_age_s,
        },
        routes=_routes(config),
        fallback_cluster=names[0],
        fallback_timeout=_duration(config.request_timeout_s),
        stream_idle_timeout=_duration(config.stream_idle_timeout_s),
        max_request_bytes=config.max_request_bytes,
        descriptor_path=str(config.descriptor_path),
        transcoded_services=list(transcoded_services),
        connect_timeout=_duration(config.connect_timeout_s),
        rate_limit=_rate_limit(config.rate_limit),
        client_limits=_client_limits(config.client_limits),
        trusted_proxy_hops=config.trusted_proxy_hops,
        clusters=_clusters(config),
        max_streams_per_connection=config.max_streams_per_connection,
        # Anywhere in the header: the services strip more kinds of whitespace than RE2's \s knows.
        service_key_pattern=rf".*{KEY_PREFIX}_{SERVICE_KEY_ID_PREFIX}.*",
        openapi=None if openapi is None else {"path": OPENAPI_PATH, "document": openapi},
        console=None if config.console is None else {"path": CONSOLE_PATH, "files": console_files, "csp": CONSOLE_CSP},
        # Envoy's default limit for a body it answers itself, 4 KiB, is far less than the document or a script.
        direct_body_limit=max([len(openapi.encode()) if openapi else 0] + [f["size_bytes"] for f in console_files]),
    )


def write_gateway_files(config: GatewayConfig, *, config_path: Path, source_descriptor_set: Path) -> Path:
    """Write the transcoder's descriptor set (to `config.descriptor_path`) and Envoy's YAML (to `config_path`).

    The descriptor set is `source_descriptor_set` (gen/clarion.binpb) plus grpc.health.v1 with a `GET /v1/health`
    binding, so the seed system's health path is answered by the services' own gRPC health. Envoy serves the OpenAPI
    document made from the same set (gen/openapi.json). Returns config_path.
    """
    base = load_descriptor_set(source_descriptor_set)
    descriptor_set = gateway_descriptor_set(base)
    served = {service for upstream in config.upstreams for service in upstream.services}
    # Every service with an HTTP mapping that some upstream serves; reflection is gRPC-only (a bidi stream).
    transcoded = [service for service in service_names(descriptor_set, http_only=True) if service in served]
    rendered = render_envoy_config(config, transcoded, openapi=render_openapi(base, compact=True))
    config.descriptor_path.parent.mkdir(parents=True, exist_ok=True)
    config.descriptor_path.write_bytes(descriptor_set.SerializeToString())
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(rendered, encoding="utf-8")
    return config_path


def local_gateway_config(
    *,
    listen_host: str,
    listen_port: int,
    grpc_host: str,
    grpc_port: int,
    services: Sequence[str],
    descriptor_path: Path,
    client_limits: bool = True,
) -> GatewayConfig:
    """Local mode: Envoy on `listen_host:listen_port` in front of the one local gRPC server serving `services`;
    buckets per client unless `client_limits` is false (keys off: nothing tells the callers apart)."""
    # A server bound to every interface is still reached on loopback.
    upstream_host = "127.0.0.1" if grpc_host in ("0.0.0.0", "") else ("::1" if grpc_host == "::" else grpc_host)
    upstream = Upstream("clarion", upstream_host, grpc_port, (*services, HEALTH_SERVICE, *REFLECTION_SERVICES))
    return GatewayConfig(
        listen_host=listen_host,
        listen_port=listen_port,
        upstreams=(upstream,),
        descriptor_path=descriptor_path,
        client_limits=ClientLimits() if client_limits else None,
        console=None if (console := console_source()) is None else ConsoleFiles(console, console),
    )
