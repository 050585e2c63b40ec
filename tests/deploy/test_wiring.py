"""How the objects of each overlay fit together: Services and their pods, Envoy's clusters and the Services,
disruption budgets, autoscalers, settings, Secrets, the namespace and the network policies."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePosixPath

import yaml

from clarion.core.config import ENV_PREFIX, Settings
from clarion.delivery.queues import CHANNEL_QUEUES
from clarion.gateway import kubernetes as gateway_k8s
from clarion.gateway.config import STREAMING_METHODS, STREAMS_SUFFIX, WATCH_SUFFIX
from clarion.gateway.descriptors import REFLECTION_SERVICES
from clarion.keys.scopes import SERVICE_KEY_SCOPES
from tests.deploy.conftest import K8S
from tests.deploy.manifests import Manifests, Obj, Workload, container_port, selects

KNOWN_SETTINGS = {ENV_PREFIX + field.upper() for field in Settings.model_fields}


def pods(manifests: Manifests) -> list[Workload]:
    """The long-running workloads (what a Service, a budget or a network policy is about)."""
    return [workload for workload in manifests.workloads() if not workload.is_job]


def selected(manifests: Manifests, selector: dict[str, str]) -> list[Workload]:
    """The workloads whose pods `selector` picks; every workload when it is empty."""
    return [workload for workload in manifests.workloads() if selects(selector, workload.pod_labels)]


def test_every_service_selects_pods_that_have_its_target_ports(manifests: Manifests) -> None:
    for service in manifests.of_kind("Service"):
        name = service["metadata"]["name"]
        targets = [w for w in selected(manifests, service["spec"]["selector"]) if not w.is_job]
        assert targets, f"{manifests.overlay}: Service {name} selects no pod template"
        for port in service["spec"]["ports"]:
            for workload in targets:
                assert any(container_port(c, port["targetPort"]) for c in workload.containers), (
                    f"Service {name}: {workload} has no port {port['targetPort']}"
                )


def test_every_envoy_cluster_is_a_headless_service_on_its_port(manifests: Manifests) -> None:
    config_map = manifests.named_like("ConfigMap", "gateway-config")
    envoy = yaml.safe_load(config_map["data"][gateway_k8s.CONFIG_FILE])
    # The admin cluster (Envoy's own loopback admin interface, for its metrics) is no Service.
    clusters = [c for c in envoy["static_resources"]["clusters"] if c["name"] != "envoy_admin"]

    # One cluster per upstream for calls, one more for streams where the upstream serves reflection, and one for
    # watches where it serves a streaming method (WatchInbox).
    streams = {u.name + STREAMS_SUFFIX for u in gateway_k8s.UPSTREAMS if set(REFLECTION_SERVICES) & set(u.services)}
    watching = {method.split("/")[0] for method in STREAMING_METHODS}
    streams |= {u.name + WATCH_SUFFIX for u in gateway_k8s.UPSTREAMS if watching & set(u.services)}
    assert {cluster["name"] for cluster in clusters} == {u.name for u in gateway_k8s.UPSTREAMS} | streams
    assert streams
    for cluster in clusters:
        (endpoint,) = (e for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"])
        address = endpoint["endpoint"]["address"]["socket_address"]
        service = manifests.get("Service", address["address"].split(".")[0])
        assert address["port_value"] in [port["port"] for port in service["spec"]["ports"]], cluster["name"]
        # STRICT_DNS balances over the addresses DNS returns: one per pod only for a headless Service.
        assert (cluster["type"], service["spec"].get("clusterIP")) == ("STRICT_DNS", "None"), cluster["name"]


def test_the_gateway_mounts_its_config_where_the_renderer_points(manifests: Manifests) -> None:
    config_map = manifests.named_like("ConfigMap", "gateway-config")
    workload = manifests.workload("gateway")
    (envoy,) = workload.containers
    (mount,) = (m for m in envoy["volumeMounts"] if m["mountPath"] == str(gateway_k8s.MOUNT_DIR))
    (volume,) = (v for v in workload.pod["volumes"] if v["name"] == mount["name"])
    args: list[str] = envoy["args"]
    rendered = yaml.safe_load(config_map["data"][gateway_k8s.CONFIG_FILE])
    (transcoder,) = (
        f["typed_config"]
        for f in rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
            "http_filters"
        ]
        if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    )

    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert args[args.index("--config-path") + 1] == str(gateway_k8s.MOUNT_DIR / gateway_k8s.CONFIG_FILE)
    assert PurePosixPath(transcoder["proto_descriptor"]) == gateway_k8s.MOUNT_DIR / gateway_k8s.DESCRIPTOR_FILE
    # Binary, so in binaryData; kustomize decides by content.
    assert gateway_k8s.DESCRIPTOR_FILE in config_map["binaryData"]


def test_every_deployment_has_a_disruption_budget_in_prod(overlay: Callable[[str], Manifests]) -> None:
    prod = overlay("overlays/prod")
    budgets = prod.of_kind("PodDisruptionBudget")
    for workload in prod.workloads():
        if workload.kind == "Deployment":
            assert any(selects(b["spec"]["selector"]["matchLabels"], workload.pod_labels) for b in budgets), workload
    for budget in budgets:
        assert selected(prod, budget["spec"]["selector"]["matchLabels"]), budget["metadata"]["name"]


def test_autoscalers_target_deployments_that_leave_the_count_to_them(manifests: Manifests) -> None:
    hpa_targets = [hpa["spec"]["scaleTargetRef"]["name"] for hpa in manifests.of_kind("HorizontalPodAutoscaler")]
    keda_targets = [so["spec"]["scaleTargetRef"]["name"] for so in manifests.of_kind("ScaledObject")]

    # KEDA makes an HPA of its own for a ScaledObject and refuses a target that already has one.
    assert not set(hpa_targets) & set(keda_targets)
    assert len(set(hpa_targets + keda_targets)) == len(hpa_targets + keda_targets)
    for name in hpa_targets + keda_targets:
        deployment = manifests.get("Deployment", name)
        # Else every `kubectl apply` would reset the count the autoscaler chose.
        assert "replicas" not in deployment["spec"], f"{name} is autoscaled but sets replicas"


def test_the_dev_overlay_runs_one_replica_of_everything(overlay: Callable[[str], Manifests]) -> None:
    dev = overlay("overlays/dev")

    assert not dev.of_kind("HorizontalPodAutoscaler", "ScaledObject")
    for workload in pods(dev):
        assert workload.obj["spec"].get("replicas", 1) == 1, workload


def test_keda_scales_each_channel_worker_on_its_own_queue(overlay: Callable[[str], Manifests]) -> None:
    prod = overlay("overlays/prod")
    scaled = prod.of_kind("ScaledObject")
    authentications = {auth["metadata"]["name"]: auth for auth in prod.of_kind("TriggerAuthentication")}

    # Every channel's worker (the dispatcher and the sweeper read PostgreSQL, not a queue).
    assert len(scaled) == len(CHANNEL_QUEUES)
    for scaled_object in scaled:
        container = prod.workload(scaled_object["spec"]["scaleTargetRef"]["name"]).containers[0]
        (trigger,) = scaled_object["spec"]["triggers"]
        kind = container["args"][1]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == CHANNEL_QUEUES[kind]
        # queueLength is deprecated; mode + value is what KEDA 2.x reads.
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert float(trigger["metadata"]["value"]) > 0
        assert "queueLength" not in trigger["metadata"]
        auth = authentications[trigger["authenticationRef"]["name"]]
        assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"host"}


def test_every_setting_given_is_one_clarion_reads(manifests: Manifests) -> None:
    settings = manifests.named_like("ConfigMap", "clarion-settings")
    given = set(settings.get("data", {}))
    for _, container in manifests.containers():
        given |= {env["name"] for env in container.get("env", []) if env["name"].startswith(ENV_PREFIX)}

    assert given - KNOWN_SETTINGS == set()


def _secret_references(manifests: Manifests) -> set[tuple[str, str]]:
    references: set[tuple[str, str]] = set()
    for workload, container in manifests.containers():
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                references.add((ref["name"], ref["key"]))
        for volume in workload.pod.get("volumes", []):
            if "secret" in volume:
                references |= {(volume["secret"]["secretName"], item["key"]) for item in volume["secret"]["items"]}
    for auth in manifests.of_kind("TriggerAuthentication"):
        references |= {(ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    return references


def test_secrets_are_referenced_never_committed_and_each_reference_is_documented(manifests: Manifests) -> None:
    readme = (K8S / "README.md").read_text().splitlines()

    assert not manifests.of_kind("Secret")
    for name, key in sorted(_secret_references(manifests)):
        assert any(f"`{name}`" in line and f"`{key}`" in line for line in readme), (
            f"deploy/k8s/README.md does not say how to create Secret {name} with key {key}"
        )


def _secrets_of(workload: Workload) -> dict[str, tuple[str, str]]:
    """Each CLARION_* variable a workload reads from a Secret, and which (Secret, key)."""
    found = {}
    for container in workload.containers:
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref and env["name"].startswith(ENV_PREFIX):
                found[env["name"]] = (ref["name"], ref["key"])
    return found


def test_only_the_key_verifiers_hold_the_pepper_and_each_caller_its_own_service_key(manifests: Manifests) -> None:
    clarion = manifests.workloads()
    pepper = {w.name for w in clarion if "CLARION_API_KEY_PEPPER" in _secrets_of(w)}
    assert pepper == {"users", "templates", "notifications"}, "only the gRPC servers verify keys"
    service_keys = {
        w.name: _secrets_of(w)["CLARION_SERVICE_KEY"] for w in clarion if "CLARION_SERVICE_KEY" in _secrets_of(w)
    }
    # Each workload that calls another service has a key for its own name in SERVICE_KEY_SCOPES, and no other does.
    workload_names = {"notifications": "notifications", "dispatcher": "dispatcher", "push-worker": "push"}
    assert service_keys == {w: ("clarion-service-keys", key) for w, key in workload_names.items()}
    assert set(workload_names.values()) == set(SERVICE_KEY_SCOPES)


def test_only_the_migrate_job_connects_as_the_schema_owner(manifests: Manifests) -> None:
    for workload in manifests.workloads():
        database = _secrets_of(workload).get("CLARION_DATABASE_URL")
        if database is None:
            continue
        expected = "migrate-url" if workload.name == "migrate" else "url"
        assert database == ("clarion-database", expected), workload
    (migrate,) = [w for w in manifests.workloads() if w.name == "migrate"]
    (container,) = migrate.containers
    role = {env["name"]: env.get("value") for env in container["env"]}["CLARION_DATABASE_APP_ROLE"]
    readme = (K8S / "README.md").read_text()
    assert f"postgresql://{role}:" in readme, "the documented `url` connects as the role migrations grant"


def test_no_secret_is_committed_anywhere_under_deploy() -> None:
    for path in K8S.rglob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict):
                assert document.get("kind") != "Secret", path
                assert "secretGenerator" not in document, path


def test_the_namespace_enforces_restricted_pod_security(manifests: Manifests) -> None:
    (namespace,) = manifests.of_kind("Namespace")
    name = namespace["metadata"]["name"]

    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in manifests.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == name, f"{obj['kind']}/{obj['metadata']['name']}"


def _policy_selectors(policy: Obj) -> list[dict[str, str]]:
    peers = [peer for rule in policy["spec"].get("ingress", []) for peer in rule.get("from", [])]
    peers += [peer for rule in policy["spec"].get("egress", []) for peer in rule.get("to", [])]
    return [peer["podSelector"].get("matchLabels", {}) for peer in peers if "podSelector" in peer]


def test_network_policies_deny_by_default_and_name_only_pods_that_exist(manifests: Manifests) -> None:
    policies = manifests.of_kind("NetworkPolicy")
    if not policies:
        assert manifests.overlay == "base", "every overlay includes the network-policies component"
        return
    deny = manifests.get("NetworkPolicy", "default-deny")

    assert (deny["spec"]["podSelector"], sorted(deny["spec"]["policyTypes"])) == ({}, ["Egress", "Ingress"])
    assert "ingress" not in deny["spec"]
    assert "egress" not in deny["spec"]
    for policy in policies:
        own = policy["spec"]["podSelector"].get("matchLabels", {})
        for selector in [own, *_policy_selectors(policy)]:
            assert selected(manifests, selector), f"NetworkPolicy {policy['metadata']['name']}: {selector} is nobody"
    for workload in manifests.workloads():
        specific = [
            p for p in policies if selects(p["spec"]["podSelector"].get("matchLabels", {}), workload.pod_labels)
        ]
        assert any(p["spec"]["podSelector"] for p in specific), f"{workload} has no policy of its own"


def test_the_grpc_port_is_the_one_envoy_and_the_clients_use(manifests: Manifests) -> None:
    settings: dict[str, str] = manifests.named_like("ConfigMap", "clarion-settings")["data"]
    for key in ("CLARION_USERS_ADDRESS", "CLARION_TEMPLATES_ADDRESS"):
        host, port = settings[key].rsplit(":", 1)
        service = manifests.get("Service", host)
        assert re.fullmatch(r"\d+", port)
        assert int(port) in [p["port"] for p in service["spec"]["ports"]], key
    assert settings["CLARION_GRPC_PORT"] == str(gateway_k8s.GRPC_PORT)
