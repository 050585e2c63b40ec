"""`buf breaking` against the contracts of a git ref, offline.

Without a ref it compares with the last release: the newest `v*` tag that is an ancestor of HEAD. Without one (a
clone that did not fetch tags), with the merge base of HEAD and `main` when that is not HEAD itself (a branch), and
otherwise with HEAD's parent (main itself: the last commit may not break what the one before offered). Comparing
main with main, as this once did, could never fail.

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


def git(*args: str) -> str | None:
    """A git command's output, or None when it fails (no such tag, no such branch, a shallow clone)."""
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def baseline() -> tuple[str, str]:
    """The ref to compare with, and why it was chosen."""
    has_parent = git("rev-parse", "--verify", "--quiet", "HEAD^") is not None
    # From HEAD's parent: a release commit, tagged itself, is compared with the release before it.
    tag = git("describe", "--tags", "--abbrev=0", "--match", "v[0-9]*", "HEAD^") if has_parent else None
    if tag is not None:
        return tag, "the last release tag"
    head = git("rev-parse", "HEAD")
    for main in ("origin/main", "main"):  # a CI clone may have only the remote's branch
        base = git("merge-base", "HEAD", main)
        if base is not None and base != head:
            return base, f"the merge base with {main}"
    if has_parent:
        return "HEAD^", "no release tag here: HEAD's parent"
    return "HEAD", "a single commit: nothing earlier to compare with"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1]:
        ref, why = sys.argv[1], "as asked"
    else:
        ref, why = baseline()
    sys.stderr.write(f"buf breaking: the contracts against {ref} ({why})\n")
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
