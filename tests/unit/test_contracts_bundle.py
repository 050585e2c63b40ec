"""`make contracts`: the bundle is self-contained (protoc compiles every contract from it with no other include
path), carries the descriptor set and the OpenAPI document as generated, and is reproducible."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "contracts_bundle.py"


def build(out: Path) -> Path:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def test_the_bundle_compiles_alone_and_is_reproducible(tmp_path: Path) -> None:
    first, second = build(tmp_path / "a"), build(tmp_path / "b")
    assert first.name.startswith("clarion-contracts-")
    assert first.name.endswith(".tar.gz")
    assert first.read_bytes() == second.read_bytes(), "the same commit must give the same bytes"

    with tarfile.open(first) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    (bundle,) = (tmp_path / "x").iterdir()
    assert (bundle / "clarion.binpb").read_bytes() == (ROOT / "gen" / "clarion.binpb").read_bytes()
    assert (bundle / "openapi.json").read_bytes() == (ROOT / "gen" / "openapi.json").read_bytes()
    assert (bundle / "README.md").is_file()
    assert (bundle / "buf.yaml").is_file()

    contracts = sorted(str(p.relative_to(bundle / "proto")) for p in (bundle / "proto" / "clarion").rglob("*.proto"))
    assert contracts == sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    out = tmp_path / "out"
    out.mkdir()
    # grpc_tools' protoc brings only the well-known types: google/api and google/rpc must come from the bundle.
    compiled = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{bundle / 'proto'}", f"--python_out={out}", *contracts],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stderr
    assert (out / "clarion" / "v1" / "notifications_pb2.py").is_file()
