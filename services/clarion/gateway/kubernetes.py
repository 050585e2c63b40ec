"""Envoy's configuration for Kubernetes, rendered from gateway/envoy.yaml.j2 into deploy/k8s/base/gateway/.

kustomize's configMapGenerator turns the two files there (envoy.yaml, gateway.binpb) into the `gateway-config`
ConfigMap, which the Envoy container mounts at /etc/envoy. Like gen/, they are generated and committed:
`python -m clarion.gateway.kubernetes` writes them, and `--check` fails when they differ from what the template
and the protos make now (tests/deploy runs the same comparison).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from google.protobuf import descriptor_pb2

from clarion.contracts import full_name
from clarion.gateway.config import ConsoleFiles, GatewayConfig, Upstream, console_source, render_envoy_config
from clarion.gateway.descriptors import (
    HEALTH_SERVICE,
    REFLECTION_SERVICES,
    default_descriptor_set_path,
    gateway_descriptor_set,
    load_descriptor_set,
    service_names,
)
from clarion.gateway.openapi import render_openapi

CONFIG_FILE = "envoy.yaml"
DESCRIPTOR_FILE = "gateway.binpb"
# Where deploy/k8s/base/gateway.yaml mounts the ConfigMap in the Envoy container.
MOUNT_DIR = PurePosixPath("/etc/envoy")
# The console's files: copied into <out>/console/ for the gateway-console ConfigMap, which deploy/k8s/base/gateway.yaml
# mounts here (beside /etc/envoy, not inside it: that is a ConfigMap volume of its own).
CONSOLE_DIR = "console"
CONSOLE_MOUNT_DIR = PurePosixPath("/etc/envoy-console")
LISTEN_PORT = 8080
# Envoy's admin interface (loopback only) and the listener that serves its metrics as GET /metrics: the same port as
# the gRPC services' metrics, so the PodMonitor's `metrics` endpoint covers the gateway too.
ADMIN_PORT = 9901
METRICS_PORT = 9464
GRPC_PORT = 50051
DEFAULT_OUT_DIR = Path("deploy/k8s/base/gateway")

# One upstream per Deployment, by its Service's short DNS name: Envoy resolves it through the pod's search domains,
# so the config works in whatever namespace an overlay picks. The Services are headless, so STRICT_DNS sees every
# ready pod's address and Envoy balances each request across them (a ClusterIP would pin each HTTP/2 connection,
# and so all of its requests, to one pod). Health and reflection have to go somewhere: the first Deployment.
UPSTREAMS = (
    Upstream(
        "users",
        "users",
        GRPC_PORT,
        # AccessService is served by every server process (clarion.app.served): the first Deployment will do.
        (
            full_name("UserService"),
            full_name("AccessService"),
            HEALTH_SERVICE,
            *REFLECTION_SERVICES,
        ),
    ),
    Upstream("templates", "templates", GRPC_PORT, (full_name("TemplateService"),)),
    Upstream(
        "notifications",
        "notifications",
        GRPC_PORT,
        # The notifications Deployment serves InboxService, SuppressionService and ProviderEventService beside
        # NotificationService (clarion.app.SERVED_WITH).
        (
            full_name("NotificationService"),
            full_name("InboxService"),
            full_name("SuppressionService"),
            full_name("ProviderEventService"),
        ),
    ),
)

_HEADER = (
    "# Envoy for Kubernetes, mounted at {mount}. Regenerate with `python -m clarion.gateway.kubernetes`;\n"
    "# tests/deploy fails while this file differs from what the template renders.\n"
)


def kubernetes_gateway_config(*, cors_origins: Sequence[str] = (), trusted_proxy_hops: int = 0) -> GatewayConfig:
    """The edge as it runs in the cluster: every interface, the admin interface on loopback only (its metrics served
    on METRICS_PORT for Prometheus, nothing else of it), one upstream per Deployment."""
    return GatewayConfig(
        listen_host="0.0.0.0",
        listen_port=LISTEN_PORT,
        upstreams=UPSTREAMS,
        descriptor_path=Path(MOUNT_DIR / DESCRIPTOR_FILE),
        # The admin interface can stop Envoy and dump its config: loopback only, reached by nothing but the metrics
        # listener's one route.
        admin_host="127.0.0.1",
        admin_port=ADMIN_PORT,
        metrics_port=METRICS_PORT,
        cors_origins=tuple(cors_origins),
        trusted_proxy_hops=trusted_proxy_hops,
        console=None if (console := console_source()) is None else ConsoleFiles(console, CONSOLE_MOUNT_DIR),
    )


def _without_source_info(descriptor_set: descriptor_pb2.FileDescriptorSet) -> descriptor_pb2.FileDescriptorSet:
    """The set minus its comments and source positions: the transcoder reads neither, and they are five sixths of
    its size. Small matters here: `kubectl apply` copies every object into an annotation limited to 256 KiB."""
    stripped = descriptor_pb2.FileDescriptorSet()
    stripped.CopyFrom(descriptor_set)
    for file in stripped.file:
        file.ClearField("source_code_info")
    return stripped


def render_kubernetes_gateway(
    *, source_descriptor_set: Path | None = None, cors_origins: Sequence[str] = (), trusted_proxy_hops: int = 0
) -> dict[str, bytes]:
    """File name → contents of the gateway ConfigMap's files; nothing is written."""
    config = kubernetes_gateway_config(cors_origins=cors_origins, trusted_proxy_hops=trusted_proxy_hops)
    base = load_descriptor_set(source_descriptor_set or default_descriptor_set_path())
    descriptor_set = gateway_descriptor_set(base)
    served = {service for upstream in config.upstreams for service in upstream.services}
    # As write_gateway_files does: the services with an HTTP mapping that some upstream serves.
    transcoded = [service for service in service_names(descriptor_set, http_only=True) if service in served]
    # The OpenAPI document needs the comments the ConfigMap's descriptor set leaves out.
    openapi = render_openapi(base, compact=True)
    envoy_yaml = _HEADER.format(mount=MOUNT_DIR) + render_envoy_config(config, transcoded, openapi=openapi)
    files = {
        CONFIG_FILE: envoy_yaml.encode(),
        DESCRIPTOR_FILE: _without_source_info(descriptor_set).SerializeToString(deterministic=True),
    }
    # The console's files, copied for the gateway-console ConfigMap (kustomize reads files inside its own tree only).
    if config.console is not None:
        for file in config.console.files():
            files[f"{CONSOLE_DIR}/{file['name']}"] = (config.console.source / file["name"]).read_bytes()
    return files


def stale_files(out_dir: Path, files: dict[str, bytes]) -> list[str]:
    """The names of `files` whose copy in `out_dir` is missing or different, and of console files there that are
    no longer in the console."""
    stale = [
        name for name, data in files.items() if not (out_dir / name).is_file() or (out_dir / name).read_bytes() != data
    ]
    copies = out_dir / CONSOLE_DIR
    left = sorted(f"{CONSOLE_DIR}/{path.name}" for path in copies.iterdir()) if copies.is_dir() else []
    return stale + [name for name in left if name not in files]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The renderer's options, on its own parser or on a `clarion` subcommand's."""
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help=f"directory (default: {DEFAULT_OUT_DIR})")
    parser.add_argument("--check", action="store_true", help="write nothing; fail if the files there are stale")
    parser.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        metavar="URL",
        help="a browser origin allowed to call the API (repeatable; default: none, no browser page may)",
    )
    parser.add_argument(
        "--trusted-proxy-hops",
        type=int,
        default=0,
        choices=range(4),
        metavar="N",
        help="proxies in front of the gateway (an Ingress: 1) whose X-Forwarded-For names the client, for the "
        "per-address rate limit of calls without a key (default: 0, the connection's peer)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the stale files into `args.out` (or, with `args.check`, only report them); the exit code."""
    files = render_kubernetes_gateway(cors_origins=args.cors_origins or (), trusted_proxy_hops=args.trusted_proxy_hops)
    stale = stale_files(args.out, files)
    if args.check:
        if stale:
            command = f"python -m clarion.gateway.kubernetes --out {args.out}"
            sys.stderr.write(f"stale in {args.out}: {', '.join(stale)}; run `{command}`\n")
            return 1
        return 0
    for name in stale:
        target = args.out / name
        if name not in files:
            target.unlink()
            sys.stdout.write(f"removed {target}\n")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[name])
        sys.stdout.write(f"wrote {target}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m clarion.gateway.kubernetes [--out DIR] [--check] [--cors-origin URL ...] [--trusted-proxy-hops N]`."""
    parser = argparse.ArgumentParser(
        prog="python -m clarion.gateway.kubernetes",
        description="Render Envoy's Kubernetes configuration (envoy.yaml, gateway.binpb) for the gateway ConfigMap.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
