"""The monitoring component as the prod overlay renders it: the Grafana dashboard and the alerts parse, use only the
metrics services/clarion/core/metrics.py defines (with the right suffixes), and their PromQL is valid for the real
promtool; every alert fires on the series it is meant for (tests/deploy/alerts-test.yaml); the PodMonitor scrapes
ports every Clarion process declares."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import clarion.core.metrics  # noqa: F401 - registers the catalogue in the default registry
from clarion import app
from tests.deploy.conftest import require_tool
from tests.deploy.manifests import Manifests, container_port, selects
from tests.deploy.test_workloads import settings_value

HERE = Path(__file__).parent
METRIC = re.compile(r"\bclarion_[a-z0-9_]+\b")
# What the issue asks alerts for: dead letters growing, success rate under 99.5 %, dispatcher lag, breaker open.
REQUIRED_ALERTS = {
    "ClarionDeadLettersGrowing",
    "ClarionDeliverySuccessRateLow",
    "ClarionDispatcherLagging",
    "ClarionCircuitBreakerOpen",
}


def exported_names() -> dict[str, str]:
    """Every series name Clarion's catalogue exports, mapped to its metric: counters as `_total`, histograms as
    `_bucket`, `_count` and `_sum`, gauges as they are."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        family.name + suffix: family.name
        for family in REGISTRY.collect()
        if family.name.startswith("clarion_")
        for suffix in suffixes[family.type]
    }


@pytest.fixture(scope="module")
def prod(overlay: Callable[[str], Manifests]) -> Manifests:
    return overlay("overlays/prod")


@pytest.fixture(scope="module")
def dashboard(prod: Manifests) -> dict[str, Any]:
    config_map = prod.get("ConfigMap", "clarion-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1", "Grafana's sidecar finds it by this label"
    parsed: dict[str, Any] = json.loads(config_map["data"]["clarion-dashboard.json"])
    return parsed


@pytest.fixture(scope="module")
def rules(prod: Manifests) -> dict[str, Any]:
    spec: dict[str, Any] = prod.get("PrometheusRule", "clarion")["spec"]
    return spec


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def alert_rules(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def test_the_dashboard_uses_only_exported_metrics_and_shows_every_one(dashboard: dict[str, Any]) -> None:
    exported = exported_names()
    queries = dashboard_queries(dashboard)
    used = {name for query in queries for name in METRIC.findall(query)}

    assert queries, "the dashboard has panels with queries"
    assert used - exported.keys() == set(), "queries name series Clarion does not export"
    assert set(exported.values()) - {exported[name] for name in used} == set(), "metrics no panel shows"
    assert all(
        panel.get("datasource", {}).get("uid") == "${datasource}" for panel in dashboard["panels"] if "targets" in panel
    )


def test_the_alerts_use_only_exported_metrics_and_cover_what_the_issue_asks(rules: dict[str, Any]) -> None:
    exported = exported_names()
    alerts = alert_rules(rules)
    used = {name for rule in alerts for name in METRIC.findall(rule["expr"])}

    assert used - exported.keys() == set()
    assert {rule["alert"] for rule in alerts} >= REQUIRED_ALERTS
    for rule in alerts:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "apt-get install prometheus (Debian), or put promtool on PATH")


def run_promtool(promtool: str, *args: str, cwd: Path) -> None:
    """Run promtool in `cwd`; fail the test with its output unless it succeeds."""
    result = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_finds_every_query_valid(
    rules: dict[str, Any], dashboard: dict[str, Any], promtool: str, tmp_path: Path
) -> None:
    # The dashboard's queries as recording rules, Grafana's $__rate_interval as a plain range: promtool parses both.
    recorded = [
        {"record": f"clarion:dashboard_query_{n}", "expr": query.replace("$__rate_interval", "5m")}
        for n, query in enumerate(dashboard_queries(dashboard))
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))

    run_promtool(promtool, "check", "rules", "rules.yaml", "dashboard.yaml", cwd=tmp_path)


def test_each_alert_fires_on_its_series_and_not_on_healthy_ones(
    rules: dict[str, Any], promtool: str, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    shutil.copy(HERE / "alerts-test.yaml", tmp_path)
    tested = yaml.safe_load((HERE / "alerts-test.yaml").read_text())
    firing = {case["alertname"] for test in tested["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]}

    run_promtool(promtool, "test", "rules", "alerts-test.yaml", cwd=tmp_path)
    assert firing == {rule["alert"] for rule in alert_rules(rules)}, "every alert has a test that makes it fire"


def test_the_pod_monitor_scrapes_a_port_every_clarion_process_declares(prod: Manifests) -> None:
    monitor = prod.get("PodMonitor", "clarion")
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    assert {endpoint["path"] for endpoint in endpoints} == {"/metrics"}
    # Each process serves /metrics on the port its settings name: the services' metrics port, the workers' health.
    expected = {
        "serve": ("metrics", int(settings_value(prod, "CLARION_METRICS_PORT", 9464))),
        "worker": ("health", int(settings_value(prod, "CLARION_HEALTH_PORT", 8081))),
    }
    assert {endpoint["port"] for endpoint in endpoints} == {name for name, _ in expected.values()}
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = 0
    for workload, container in prod.containers():
        command = (container.get("args") or [""])[0]
        if command not in expected:
            continue
        name, number = expected[command]
        declared = container_port(container, name)
        assert declared is not None, f"{workload}: no port named {name}"
        assert declared["containerPort"] == number, f"{workload}: {name} is not where the process serves /metrics"
        assert selects(selector, workload.pod_labels), f"{workload} is not selected by the PodMonitor"
        scraped += 1
    assert scraped == len(app.DEPLOYED_SERVICES) + len(app.WORKER_KINDS), "every service and worker"
