"""`make contracts`: the contracts bundle for client authors, build/clarion-contracts-<version>.tar.gz.

Everything a generator needs and nothing else, in one folder tree that `protoc -I proto` or `buf` reads as is:
  proto/clarion/v1/*.proto      the contracts
  proto/google/{api,rpc}/*.proto  the googleapis files they import (the well-known types come with every protoc)
  buf.yaml                      a buf module over proto/ (no dependencies: nothing is fetched)
  clarion.binpb                 the self-contained descriptor set (gen/clarion.binpb), for protoc
                                --descriptor_set_in, @grpc/proto-loader and reflection-style tools
  openapi.json                  the REST edge as OpenAPI 3.1 (gen/openapi.json)
  README.md                     docs/clients.md
The archive is reproducible: sorted entries, fixed times and owners, so the same commit gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import io
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOOGLEAPIS_DIR = ROOT / "third_party" / "googleapis"
BUF_YAML = """\
# The Clarion contracts and the googleapis files they import, as one buf module.
version: v2
modules:
  - path: proto
"""


def members() -> list[tuple[str, bytes]]:
    """(path in the archive, content), sorted."""
    # third_party/googleapis from the installed wheel (`make googleapis`): exactly what gen/ was built with.
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--googleapis-only"], check=True)
    files: dict[str, bytes] = {}
    for proto in (ROOT / "protos").rglob("*.proto"):
        files[f"proto/{proto.relative_to(ROOT / 'protos')}"] = proto.read_bytes()
    for proto in GOOGLEAPIS_DIR.rglob("*.proto"):
        files[f"proto/{proto.relative_to(GOOGLEAPIS_DIR)}"] = proto.read_bytes()
    files["buf.yaml"] = BUF_YAML.encode()
    files["clarion.binpb"] = (ROOT / "gen" / "clarion.binpb").read_bytes()
    files["openapi.json"] = (ROOT / "gen" / "openapi.json").read_bytes()
    files["README.md"] = (ROOT / "docs" / "clients.md").read_bytes()
    return sorted(files.items())


def build(out_dir: Path) -> Path:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    prefix = f"clarion-contracts-{version}"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in members():
            info = tarfile.TarInfo(f"{prefix}/{path}")
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{prefix}.tar.gz"
    # mtime=0 and no file name in the gzip header: the same input, the same bytes.
    with target.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped:
        zipped.write(archive.getvalue())
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="where to write the archive (build/)")
    print(build(parser.parse_args().out))  # noqa: T201 - the path is the command's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
