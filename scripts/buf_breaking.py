"""`buf breaking` against the contracts of a git ref (a release tag, or main), offline.

buf would fetch a `.git#ref=` input's imports from nowhere (the googleapis protos are not committed), so the ref's
`protos/` and `buf.yaml` are exported to a temporary workspace next to a copy of the same googleapis protos, and the
working tree is compared with that workspace: both sides then have the same two modules.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ref = sys.argv[1] if len(sys.argv) > 1 else "main"
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "protos", "buf.yaml"], cwd=ROOT, capture_output=True, check=False
    )
    if archive.returncode != 0:
        sys.stderr.write(f"cannot read protos/ at {ref}: {archive.stderr.decode().strip()}\n")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        against = Path(tmp)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(against, filter="data")
        shutil.copytree(ROOT / "third_party", against / "third_party")
        buf = Path(sys.executable).parent / "buf"
        return subprocess.run([str(buf), "breaking", "--against", str(against)], cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
