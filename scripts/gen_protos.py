"""Generate gen/ from protos/: Python stubs, type stubs, Envoy's descriptor set and the REST edge's OpenAPI.

`python scripts/gen_protos.py` writes gen/; `--check` regenerates into a temporary folder and fails if the
result differs from what is committed. Everything runs offline: buf comes from the buf-bin wheel and the
googleapis protos from the googleapis-common-protos wheel.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import google.api
import google.rpc

from clarion.gateway.descriptors import load_descriptor_set
from clarion.gateway.openapi import render_openapi

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GOOGLEAPIS_DIR = ROOT / "third_party" / "googleapis"
GEN_DIR = ROOT / "gen"
BIN_DIR = Path(sys.executable).parent

# Only what our contracts import, plus google/rpc for Envoy's error details; the whole of google/api would pull in
# files that import protos the wheel does not ship.
GOOGLEAPIS_FILES = {
    google.api: ["annotations.proto", "http.proto", "field_behavior.proto", "httpbody.proto"],
    google.rpc: ["status.proto", "error_details.proto", "code.proto"],
}


def copy_googleapis() -> None:
    """Copy the googleapis protos we import from the installed wheel into third_party/googleapis/."""
    for package, names in GOOGLEAPIS_FILES.items():
        source_dir = Path(package.__path__[0])
        target_dir = GOOGLEAPIS_DIR / package.__name__.replace(".", "/")
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(source_dir / name, target_dir / name)


def run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True)


def generate(out_dir: Path) -> None:
    """Write the descriptor set, the REST edge's OpenAPI document and the Python code for protos/ into out_dir (a
    fresh gen/ tree)."""
    copy_googleapis()
    descriptor_set = out_dir / "clarion.binpb"
    # Built from the workspace root so google/rpc/* is in the set: Envoy needs it to print error details as JSON.
    run(BIN_DIR / "buf", "build", "--as-file-descriptor-set", "-o", descriptor_set)
    openapi = render_openapi(load_descriptor_set(descriptor_set))
    (out_dir / "openapi.json").write_text(openapi, encoding="utf-8")
    python_out = out_dir / "python"
    python_out.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    run(
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--descriptor_set_in={descriptor_set}",
        f"--plugin=protoc-gen-mypy={BIN_DIR / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN_DIR / 'protoc-gen-mypy_grpc'}",
        f"--python_out={python_out}",
        f"--grpc_python_out={python_out}",
        f"--mypy_out={python_out}",
        f"--mypy_grpc_out={python_out}",
        *protos,
    )


def differences(left: Path, right: Path) -> list[str]:
    """Paths (relative to the trees) that differ between two directory trees."""
    found: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        found.extend(prefix + name for name in cmp.left_only + cmp.right_only + cmp.diff_files + cmp.funny_files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(left, right, ignore=["__pycache__"]), "")
    return sorted(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if gen/ is not what the protos generate")
    parser.add_argument("--googleapis-only", action="store_true", help="only copy the googleapis protos (for buf)")
    args = parser.parse_args()
    if args.googleapis_only:
        copy_googleapis()
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        fresh.mkdir()
        generate(fresh)
        if args.check:
            stale = differences(fresh, GEN_DIR) if GEN_DIR.exists() else ["gen/"]
            if stale:
                print("gen/ is out of date; run `make gen` and commit:", *stale, sep="\n  ", file=sys.stderr)  # noqa: T201 - CLI output
                return 1
            return 0
        shutil.rmtree(GEN_DIR, ignore_errors=True)
        shutil.copytree(fresh, GEN_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
