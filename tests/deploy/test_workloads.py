"""Every pod the overlays would run: the right Clarion command, probes, resources, restricted security, one image."""

from __future__ import annotations

import re
from typing import Any

import pytest

from clarion import app
from clarion.cli import build_parser
from clarion.core.config import Settings
from clarion.core.health_http import HEALTH_PATHS
from clarion.gateway.descriptors import HEALTH_PATH
from clarion.v1 import notifications_pb2, templates_pb2, users_pb2
from tests.deploy.manifests import NAME, POD_LABELS, SELECTOR_LABELS, Manifests, Obj, Workload, container_port

# `clarion serve <name>` → the gRPC service that process registers in its health servicer, from the descriptors.
GRPC_SERVICES = {
    "users": users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    "templates": templates_pb2.DESCRIPTOR.services_by_name["TemplateService"].full_name,
    "notifications": notifications_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name,
}
CLARION_COMMANDS = ("serve", "worker", "migrate")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
GATEWAY = "gateway"


def clarion_containers(manifests: Manifests) -> list[tuple[Workload, Obj]]:
    """The containers running a `clarion` command."""
    return [(w, c) for w, c in manifests.containers() if c.get("args", [None])[0] in CLARION_COMMANDS]


def settings_value(manifests: Manifests, key: str, default: Any) -> str:
    """A setting as the clarion-settings ConfigMap gives it, else its default."""
    data: dict[str, str] = manifests.named_like("ConfigMap", "clarion-settings").get("data", {})
    return data.get(key, str(default))


def test_the_expectations_here_follow_the_code() -> None:
    # The services the app serves are the ones probed below, and the worker probes use these paths.
    assert set(GRPC_SERVICES) == set(app.DEPLOYED_SERVICES)
    assert {"/healthz", "/readyz"} == HEALTH_PATHS


def test_every_service_and_worker_runs_once_and_migrations_run_as_a_job(manifests: Manifests) -> None:
    commands = sorted((tuple(c["args"]), w.kind) for w, c in clarion_containers(manifests))

    assert commands == sorted(
        [(("serve", name), "Deployment") for name in app.DEPLOYED_SERVICES]
        + [(("worker", kind), "Deployment") for kind in app.WORKER_KINDS]
        + [(("migrate",), "Job")]
    )


def test_every_clarion_command_is_one_the_cli_accepts(manifests: Manifests) -> None:
    parser = build_parser()
    for workload, container in clarion_containers(manifests):
        try:
            parser.parse_args(container["args"])
        except SystemExit:
            pytest.fail(f"{workload}: `clarion {' '.join(container['args'])}` is not a clarion command")
        assert "command" not in container, f"{workload}: the image's ENTRYPOINT is clarion; set args only"


def test_every_clarion_container_runs_the_one_image_of_this_version(
    manifests: Manifests, pyproject: dict[str, Any]
) -> None:
    version = pyproject["project"]["version"]
    images = {container["image"] for _, container in clarion_containers(manifests)}

    assert len(images) == 1, f"{manifests.overlay}: Clarion containers run several images: {images}"
    (image,) = images
    assert re.fullmatch(rf"ghcr\.io/clarion/clarion:{re.escape(version)}(@sha256:[0-9a-f]{{64}})?", image)
    for workload, container in manifests.containers():
        if "clarion/clarion" in container["image"]:
            assert container.get("args", [None])[0] in CLARION_COMMANDS, f"{workload} runs the image without a command"


def test_grpc_services_are_probed_natively_on_a_numeric_port_for_the_name_they_register(manifests: Manifests) -> None:
    for workload, container in clarion_containers(manifests):
        if container["args"][0] != "serve":
            continue
        for kind in PROBES:
            grpc = container[kind]["grpc"]
            # A named port fails validation in the API server for grpc probes (unlike httpGet).
            assert isinstance(grpc["port"], int), f"{workload} {kind}: grpc probes need a numeric port"
            assert container_port(container, grpc["port"]), f"{workload} {kind}: port {grpc['port']} is not declared"
            assert grpc["service"] == GRPC_SERVICES[container["args"][1]], f"{workload} {kind}"


def test_workers_are_probed_over_http_on_their_health_port(manifests: Manifests) -> None:
    health_port = int(settings_value(manifests, "CLARION_HEALTH_PORT", 8081))
    for workload, container in clarion_containers(manifests):
        if container["args"][0] != "worker":
            continue
        for kind in PROBES:
            http = container[kind]["httpGet"]
            assert (http["port"], http["path"] in HEALTH_PATHS) == (health_port, True), f"{workload} {kind}"
            assert container_port(container, health_port), f"{workload}: the health port is not declared"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_the_gateway_is_ready_when_a_request_gets_through_it(manifests: Manifests) -> None:
    (envoy,) = manifests.workload(GATEWAY).containers
    readiness = envoy["readinessProbe"]["httpGet"]

    assert readiness["path"] == HEALTH_PATH
    assert container_port(envoy, readiness["port"])
    # Liveness must not depend on what is behind Envoy, or an outage there would restart every Envoy.
    assert "tcpSocket" in envoy["livenessProbe"]


def test_every_long_running_container_has_readiness_and_liveness_probes(manifests: Manifests) -> None:
    for workload, container in manifests.containers():
        if not workload.is_job:
            assert {"readinessProbe", "livenessProbe"} <= container.keys(), f"{workload}/{container['name']}"


def _cpu_millis(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def test_every_container_has_cpu_and_memory_requests_within_limits(manifests: Manifests) -> None:
    for workload, container in manifests.containers():
        resources = container.get("resources", {})
        where = f"{workload}/{container['name']}"
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= resources.get(section, {}).keys(), f"{where}: {section}"
        assert _cpu_millis(resources["requests"]["cpu"]) <= _cpu_millis(resources["limits"]["cpu"]), where
        assert _bytes(resources["requests"]["memory"]) <= _bytes(resources["limits"]["memory"]), where


def test_every_pod_meets_the_restricted_pod_security_standard(manifests: Manifests) -> None:
    for workload, container in manifests.containers():
        pod, where = workload.pod, f"{workload}/{container['name']}"
        pod_context: Obj = pod.get("securityContext", {})
        context: Obj = container.get("securityContext", {})

        def effective(key: str, pod_context: Obj = pod_context, context: Obj = context) -> Any:
            return context.get(key, pod_context.get(key))

        assert effective("runAsNonRoot") is True, where
        for key in ("runAsUser", "runAsGroup"):
            assert isinstance(effective(key), int), f"{where}: {key} must be numeric"
            assert effective(key) > 0, f"{where}: {key} must not be root"
        assert (effective("seccompProfile") or {}).get("type") == "RuntimeDefault", where
        assert context.get("allowPrivilegeEscalation") is False, where
        assert context.get("privileged", False) is False, where
        assert context.get("readOnlyRootFilesystem") is True, where
        assert context.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not context.get("capabilities", {}).get("add"), where
        assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")), where
        assert pod.get("automountServiceAccountToken") is False, where


def test_every_container_can_write_tmp_and_nothing_else_of_the_image(manifests: Manifests) -> None:
    for workload, container in manifests.containers():
        volumes = {volume["name"]: volume for volume in workload.pod.get("volumes", [])}
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1, f"{workload}/{container['name']}: no /tmp mount"
        assert "emptyDir" in volumes[tmp[0]["name"]], f"{workload}/{container['name']}: /tmp is not an emptyDir"


def test_every_clarion_container_reads_the_settings_configmap(manifests: Manifests) -> None:
    settings_name = manifests.named_like("ConfigMap", "clarion-settings")["metadata"]["name"]
    for workload, container in clarion_containers(manifests):
        sources = [
            source["configMapRef"]["name"] for source in container.get("envFrom", []) if "configMapRef" in source
        ]
        assert sources == [settings_name], f"{workload}"


def test_the_grace_period_covers_the_drain(manifests: Manifests) -> None:
    shutdown_grace_s = float(settings_value(manifests, "CLARION_SHUTDOWN_GRACE_S", _default("shutdown_grace_s")))
    worker_drain_s = float(settings_value(manifests, "CLARION_WORKER_DRAIN_S", _default("worker_drain_s")))
    for workload in manifests.workloads():
        if workload.is_job:
            continue
        grace_s = workload.pod.get("terminationGracePeriodSeconds", 30)
        for container in workload.containers:
            pre_stop_s = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            command = container.get("args", [None])[0]
            drain_s = {"serve": shutdown_grace_s, "worker": worker_drain_s}.get(command, 0)
            # Behind a Service, a pod keeps serving until it has left it; then it drains; then it must still exit.
            if command == "serve" or workload.name == GATEWAY:
                assert pre_stop_s >= 5, f"{workload}: no preStop pause before SIGTERM"
            assert grace_s >= pre_stop_s + drain_s + 5, f"{workload}: {grace_s} s < {pre_stop_s} + {drain_s} + 5"


def _default(field: str) -> Any:
    return Settings.model_fields[field].default


def test_pods_carry_the_recommended_labels_and_selectors_only_the_stable_ones(
    manifests: Manifests, pyproject: dict[str, Any]
) -> None:
    for workload in manifests.workloads():
        labels = workload.pod_labels
        assert labels.keys() >= POD_LABELS, f"{workload}: missing {POD_LABELS - labels.keys()}"
        assert labels[NAME] == workload.name, f"{workload}"
        if workload.is_job:
            continue
        selector: dict[str, str] = workload.obj["spec"]["selector"]["matchLabels"]
        assert NAME in selector, f"{workload}"
        assert selector.keys() <= SELECTOR_LABELS, f"{workload}: selector uses {selector.keys() - SELECTOR_LABELS}"
    clarion = [w for w, _ in clarion_containers(manifests)] + [manifests.workload(GATEWAY)]
    for workload in clarion:
        assert workload.pod_labels["app.kubernetes.io/version"] == pyproject["project"]["version"], f"{workload}"
