"""`make breaking` (scripts/buf_breaking.py) in a repository of its own: it compares with the last release tag, or
HEAD's parent when there is none, and a removed field fails it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding the contracts, the buf workspace and the script, released as v0.1.0."""
    googleapis = ROOT / "third_party" / "googleapis"
    if not (googleapis / "google" / "api" / "annotations.proto").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--googleapis-only"], check=True)
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(googleapis, tmp_path / "third_party" / "googleapis")
    shutil.copy(ROOT / "buf.yaml", tmp_path)
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "buf_breaking.py", tmp_path / "scripts")
    (tmp_path / ".gitignore").write_text("third_party/\n")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "contracts")
    git(tmp_path, "tag", "v0.1.0")
    (tmp_path / "NOTES").write_text("a later commit that leaves the contracts alone\n")
    git(tmp_path, "add", "NOTES")
    git(tmp_path, "commit", "-q", "-m", "notes")
    return tmp_path


def breaking(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(repo / "scripts" / "buf_breaking.py")],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def drop_display_name(repo: Path) -> None:
    users = repo / "protos" / "clarion" / "v1" / "users.proto"
    text = users.read_text()
    assert "  string display_name = 8;\n" in text
    users.write_text(text.replace("  string display_name = 8;\n", ""))


def test_the_last_release_tag_is_the_baseline_and_a_removed_field_breaks_it(repo: Path) -> None:
    unchanged = breaking(repo)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    assert "against v0.1.0 (the last release tag)" in unchanged.stderr

    drop_display_name(repo)
    broken = breaking(repo)
    assert broken.returncode != 0
    assert "display_name" in broken.stdout + broken.stderr


def test_without_a_tag_the_last_commit_is_compared_with_its_parent(repo: Path) -> None:
    git(repo, "tag", "-d", "v0.1.0")
    drop_display_name(repo)
    git(repo, "commit", "-q", "-am", "drop a field")

    broken = breaking(repo)

    assert "against HEAD^ (no release tag here: HEAD's parent)" in broken.stderr
    assert broken.returncode != 0
    assert "display_name" in broken.stdout + broken.stderr
