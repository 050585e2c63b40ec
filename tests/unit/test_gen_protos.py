"""`make gen-check` really catches generated code that has drifted from the protos."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clarion.gateway.descriptors import default_descriptor_set_path, load_descriptor_set

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what generation reads and writes."""
    for name in ("protos", "gen", "scripts"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    return tmp_path


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_committed_code_is_in_sync(checkout: Path) -> None:
    result = _check(checkout)
    assert result.returncode == 0, result.stderr


def test_a_changed_proto_makes_the_check_fail(checkout: Path) -> None:
    proto = checkout / "protos" / "clarion" / "v1" / "common.proto"
    proto.write_text(
        proto.read_text().replace("CHANNEL_PUSH = 2;", "CHANNEL_PUSH = 2;\n  // Chat.\n  CHANNEL_CHAT = 9;")
    )
    result = _check(checkout)
    assert result.returncode == 1
    assert "common_pb2.py" in result.stderr
    assert "clarion.binpb" in result.stderr


def test_a_hand_edited_file_makes_the_check_fail(checkout: Path) -> None:
    stub = checkout / "gen" / "python" / "clarion" / "v1" / "users_pb2_grpc.py"
    stub.write_text(stub.read_text() + "\n# edited by hand\n")
    result = _check(checkout)
    assert result.returncode == 1
    assert "users_pb2_grpc.py" in result.stderr


def test_every_contract_says_where_each_language_puts_its_code() -> None:
    # A Go client stops at "unable to determine Go import path" without go_package; the others get a namespace
    # from the package name that nobody chose. Every file of the package says the same (buf lint checks Go's too).
    files = [f for f in load_descriptor_set(default_descriptor_set_path()).file if f.package == "clarion.v1"]
    assert len(files) == len(list((ROOT / "protos" / "clarion" / "v1").glob("*.proto")))
    for file in files:
        options = file.options
        assert options.go_package == "github.com/clarion-notify/clarion/gen/go/clarion/v1;clarionv1", file.name
        assert (options.java_package, options.java_multiple_files) == ("dev.clarion.v1", True), file.name
        assert options.java_outer_classname.endswith("Proto"), file.name
        assert (options.csharp_namespace, options.ruby_package, options.php_namespace) == (
            "Clarion.V1",
            "Clarion::V1",
            "Clarion\\V1",
        ), file.name
        assert options.objc_class_prefix == "CLR", file.name


def test_the_license_pyproject_names_is_in_the_repository() -> None:
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
