"""Reading rendered Kubernetes manifests: the objects of one `kubectl kustomize` run and the pods they would make."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

Obj = dict[str, Any]

# The labels every workload's pods carry, and the ones a selector may use: a selector is immutable, so never the
# version (which changes every release) nor part-of (which says nothing about which pods).
LABEL_PREFIX = "app.kubernetes.io/"
POD_LABELS = frozenset(LABEL_PREFIX + name for name in ("name", "instance", "component", "part-of", "version"))
SELECTOR_LABELS = frozenset(LABEL_PREFIX + name for name in ("name", "instance", "component"))
NAME = LABEL_PREFIX + "name"


@dataclass(frozen=True)
class Workload:
    """A Deployment, StatefulSet or Job and the pod template it runs."""

    kind: str
    name: str
    obj: Obj

    @property
    def pod(self) -> Obj:
        """The pod template's spec."""
        spec: Obj = self.obj["spec"]["template"]["spec"]
        return spec

    @property
    def pod_labels(self) -> dict[str, str]:
        """The pod template's labels."""
        labels: dict[str, str] = self.obj["spec"]["template"]["metadata"].get("labels", {})
        return labels

    @property
    def containers(self) -> list[Obj]:
        """Init containers, then containers."""
        return [*self.pod.get("initContainers", []), *self.pod["containers"]]

    @property
    def is_job(self) -> bool:
        """A run-to-completion pod: no probes, no Service, no disruption budget."""
        return self.kind == "Job"

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Manifests:
    """The objects `kubectl kustomize` printed for one overlay."""

    overlay: str
    objects: tuple[Obj, ...]

    @classmethod
    def parse(cls, overlay: str, text: str) -> Manifests:
        """Every non-empty YAML document of `text`."""
        return cls(overlay, tuple(doc for doc in yaml.safe_load_all(text) if doc))

    def of_kind(self, *kinds: str) -> list[Obj]:
        """The objects of these kinds, in the order printed."""
        return [obj for obj in self.objects if obj["kind"] in kinds]

    def get(self, kind: str, name: str) -> Obj:
        """The one object of `kind` named `name`; fails the test if there is none."""
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def named_like(self, kind: str, prefix: str) -> Obj:
        """The one object of `kind` whose name is `prefix` plus kustomize's content hash (`prefix-<hash>`)."""
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"].rsplit("-", 1)[0] == prefix]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} generated as {prefix}-<hash>, found {len(found)}"
        return found[0]

    def workloads(self) -> list[Workload]:
        """Everything that runs pods."""
        return [
            Workload(obj["kind"], obj["metadata"]["name"], obj)
            for obj in self.of_kind("Deployment", "StatefulSet", "Job")
        ]

    def workload(self, name: str) -> Workload:
        """The workload named `name`."""
        (found,) = (w for w in self.workloads() if w.name == name)
        return found

    def containers(self) -> Iterator[tuple[Workload, Obj]]:
        """Every container (init containers too) with its workload."""
        for workload in self.workloads():
            for container in workload.containers:
                yield workload, container


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector picks pods with `labels`."""
    return all(labels.get(key) == value for key, value in selector.items())


def container_port(container: Obj, port: int | str) -> Obj | None:
    """The container's declared port matching `port` (a number or a port name), or None."""
    declared: Obj
    for declared in container.get("ports", []):
        if port in (declared["containerPort"], declared.get("name")):
            return declared
    return None
