"""`clarion keys` and the key `clarion up` makes, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.conftest import CLARION
from tests.e2e.test_gateway_cli import rest, wait_until_rest_serves
from tests.integration.conftest import TEST_PEPPER

pytestmark = pytest.mark.e2e

KEY = re.compile(r"clr_[a-z0-9]{10}_[A-Za-z0-9_-]{43}")


def keys(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `clarion keys ...` to completion, stdout and stderr apart."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")} | env
    return subprocess.run(
        [CLARION, "keys", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=60, check=False
    )


def test_create_list_and_revoke_keys(make_database: Callable[..., str], tmp_path: Path) -> None:
    url = make_database(migrated=True)
    env = {"CLARION_DATABASE_URL": url, "CLARION_API_KEY_PEPPER": TEST_PEPPER}

    created = keys(
        "create", "--name", "billing", "--scope", "notifications:send", "--scope", "manage", env=env, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert KEY.fullmatch(key), "stdout is the key alone, for KEY=$(clarion keys create ...)"
    key_id = key.split("_")[1]
    assert f"API key {key_id}" in created.stderr
    assert "not shown again" in created.stderr

    listed = keys("list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "PROJECT", "SCOPES", "CREATED", "LAST", "USED", "REVOKED"]
    assert row.split()[:4] == [key_id, "billing", "default", "manage,notifications:send"]
    assert row.split()[-2:] == ["-", "-"], "never used, not revoked"
    assert key.split("_", 2)[2] not in listed.stdout + listed.stderr
    listed_json = keys("list", "--json", env=env, cwd=tmp_path)
    assert listed_json.returncode == 0, listed_json.stderr
    [entry] = json.loads(listed_json.stdout)
    assert (entry["id"], entry["name"], entry["scopes"]) == (key_id, "billing", ["manage", "notifications:send"])
    assert (entry["last_used"], entry["revoked"]) == (None, None)

    revoked = keys("revoke", key_id, env=env, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert "within 30 s" in revoked.stderr
    assert keys("list", env=env, cwd=tmp_path).stdout.splitlines()[1].split()[-1] != "-"

    missing = keys("revoke", "nosuchkey0", env=env, cwd=tmp_path)
    assert (missing.returncode, missing.stderr.strip()) == (1, "clarion: API key 'nosuchkey0' not found")
    bad_scope = keys("create", "--name", "x", "--scope", "root", env=env, cwd=tmp_path)
    assert bad_scope.returncode == 2
    assert "invalid choice: 'root'" in bad_scope.stderr


def test_projects_are_created_listed_and_given_keys(make_database: Callable[..., str], tmp_path: Path) -> None:
    env = {"CLARION_DATABASE_URL": make_database(migrated=True), "CLARION_API_KEY_PEPPER": TEST_PEPPER}
    nowhere = keys("create", "--name", "x", "--scope", "admin", "--project", "billing", env=env, cwd=tmp_path)
    assert nowhere.returncode == 1
    assert "project 'billing' not found" in nowhere.stderr
    made = keys("create-project", "billing", "--name", "Billing team", env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert keys("create-project", "billing", env=env, cwd=tmp_path).returncode == 1, "already exists"
    assert keys("create-project", "Not A Slug", env=env, cwd=tmp_path).returncode == 1
    assert keys("projects", env=env, cwd=tmp_path).stdout.splitlines() == [
        "billing  Billing team",
        "default  Default project",
    ]
    created = keys(
        "create", "--name", "svc", "--scope", "notifications:send", "--project", "billing", env=env, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    (row,) = keys("list", env=env, cwd=tmp_path).stdout.splitlines()[1:]
    assert row.split()[:4] == [created.stdout.split("_")[1], "svc", "billing", "notifications:send"]


def test_keys_say_what_is_missing(tmp_path: Path, postgres_server_url: str) -> None:
    not_migrated = {"CLARION_DATABASE_URL": postgres_server_url}
    no_pepper = keys("create", "--name", "x", "--scope", "admin", env=not_migrated, cwd=tmp_path)
    assert no_pepper.returncode == 2
    assert "CLARION_API_KEY_PEPPER is not set" in no_pepper.stderr
    no_table = keys("list", env=not_migrated, cwd=tmp_path)
    assert (no_table.returncode, no_table.stderr.strip()) == (
        2,
        "clarion: this database has no api_keys table yet: run `clarion migrate` first",
    )
    no_database = keys("list", env={}, cwd=tmp_path)
    assert no_database.returncode == 2
    assert "CLARION_DATABASE_URL is not set" in no_database.stderr


def test_up_makes_an_admin_key_on_first_start_and_keeps_it(
    clarion_process: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    state = tmp_path / "state"

    def up() -> tuple[int, subprocess.Popen[str]]:
        http_port = free_port()
        process = clarion_process(
            "up", "--port", str(free_port()), "--http-port", str(http_port), "--data-dir", str(state)
        )
        wait_until_rest_serves(http_port, process)
        return http_port, process

    def stop(process: subprocess.Popen[str]) -> str:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        return output

    http_port, first = up()
    key = (state / "api-key").read_text().strip()
    assert KEY.fullmatch(key)
    for secret_file in ("api-key", "api-key-pepper"):
        assert (os.stat(state / secret_file).st_mode & 0o777) == 0o600, secret_file
    status, user = rest(http_port, "POST", "/v1/users", {"email_address": "up@example.com"}, api_key=key)
    assert status == 200, user
    status, error = rest(http_port, "GET", f"/v1/users/{user['user_id']}")
    assert (status, error["code"], error["details"][0]["reason"]) == (401, 16, "API_KEY_MISSING")
    output = stop(first)
    assert f"API key   {key}   (new admin key" in output
    assert output.count(key) == 1, "printed once, never logged"

    http_port, second = up()
    assert (state / "api-key").read_text().strip() == key
    assert rest(http_port, "GET", f"/v1/users/{user['user_id']}", api_key=key)[0] == 200
    output = stop(second)
    assert key not in output, "a key is printed only when it is made"
    assert f"API key   in {state / 'api-key'}" in output

    # With clarion up stopped, `clarion keys` finds local mode's database and pepper in the data dir.
    listed = keys("list", "--data-dir", str(state), env={}, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (row,) = listed.stdout.splitlines()[1:]
    assert row.split()[:4] == [key.split("_")[1], "local", "default", "admin"]
    assert row.split()[-1] == "-"


def _postmaster(state: Path) -> int:
    return int((state / "postgres" / "postmaster.pid").read_text().split()[0])


def _alive(pid: int) -> bool:
    """Running: a zombie (exited, not yet reaped by whoever inherited it) is not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_up_stops_an_embedded_postgresql_left_by_a_killed_run_and_ctrl_c_stops_its_own(
    clarion_process: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    state = tmp_path / "state"

    def up() -> subprocess.Popen[str]:
        http_port = free_port()
        process = clarion_process(
            "up", "--port", str(free_port()), "--http-port", str(http_port), "--data-dir", str(state)
        )
        wait_until_rest_serves(http_port, process)
        return process

    killed = up()
    leftover = _postmaster(state)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert _alive(leftover), "SIGKILL leaves the embedded PostgreSQL running"

    second = up()
    own = _postmaster(state)
    assert own != leftover, "the leftover server was stopped and a new one started, not adopted"
    assert not _alive(leftover)
    second.send_signal(signal.SIGINT)  # Ctrl-C
    output, _ = second.communicate(timeout=60)
    assert second.returncode == 0, output
    deadline = time.monotonic() + 30
    while _alive(own) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(own), "Ctrl-C stops the PostgreSQL it started"


def test_keys_share_the_database_of_a_running_up(
    clarion_process: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    state, http_port = tmp_path / "state", free_port()
    process = clarion_process("up", "--port", str(free_port()), "--http-port", str(http_port), "--data-dir", str(state))
    wait_until_rest_serves(http_port, process)
    local = ["--data-dir", str(state)]
    made = keys("create-project", "billing", *local, env={}, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    created = keys("create", "--name", "svc", "--scope", "manage", "--project", "billing", *local, env={}, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    # The key works at once, and clarion up's database outlived the keys command.
    status, _ = rest(http_port, "POST", "/v1/users", {"email_address": "k@example.com"}, api_key=created.stdout.strip())
    assert status == 200
