"""`make gen-check` really catches generated code that has drifted from the protos."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    proto.write_text(proto.read_text().replace("CHANNEL_PUSH = 2;", "CHANNEL_PUSH = 2;\n  // SMS.\n  CHANNEL_SMS = 3;"))
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
