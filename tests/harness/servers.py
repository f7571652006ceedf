"""Real servers for tests: Consul, PostgreSQL, Redis (single and cluster), Traefik, Prometheus.

Every server listens on free loopback ports, keeps its files (config, data,
log) in the directory it is given, waits until its own readiness signal
answers, and can be stopped and started again on the same ports and data
(tests use that to simulate a crash and restart). Use them through the
session fixtures in tests/conftest.py, or start a private one:

    with ConsulServer.run(tmp_path) as consul:
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import yaml

from tests.harness.binaries import find_binary, postgres_binary
from tests.harness.errors import ServerStartError
from tests.harness.http_client import http_request
from tests.harness.ports import LOOPBACK, free_ports
from tests.harness.process import ManagedProcess
from tests.harness.readiness import wait_until_ready


class ManagedServer:
    """Common life cycle: start() waits for readiness, stop() ends the process group."""

    name = "server"

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.log_path = self.base_dir / f"{self.name}.log"

    @classmethod
    @contextlib.contextmanager
    def run(cls, tmp_dir: Path, **opts: Any) -> Iterator[Self]:
        """Start a server in tmp_dir, yield it, and always stop and clean it up."""
        server = cls(tmp_dir, **opts)
        try:
            server.start()
            yield server
        finally:
            server.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def is_running(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the server and remove anything it keeps outside base_dir."""
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        from tests.harness.process import log_tail

        return log_tail(self.log_path, lines)


class SingleProcessServer(ManagedServer):
    """A server that is one process (plus its children)."""

    ready_what = "ready"

    def __init__(self, base_dir: Path, *, ready_timeout: float = 30.0) -> None:
        super().__init__(base_dir)
        self.ready_timeout = ready_timeout
        self._process: ManagedProcess | None = None

    @property
    def process(self) -> ManagedProcess:
        if self._process is None:
            self._process = self._make_process()
        return self._process

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _make_process(self) -> ManagedProcess:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _before_start(self) -> None:
        """Prepare files on disk; runs before every start."""

    def _after_ready(self) -> None:
        """One-time or per-start set-up once the server answers."""

    def start(self) -> None:
        if self.is_running():
            return
        self._before_start()
        self.process.start()
        wait_until_ready(
            self.process, self._is_ready, what=self.ready_what, timeout=self.ready_timeout
        )
        self._after_ready()

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def is_running(self) -> bool:
        return self._process is not None and self._process.is_running()


# --------------------------------------------------------------------------- Consul


class ConsulServer(SingleProcessServer):
    """`consul agent -dev` on loopback. Dev mode keeps its state in memory:
    a restart comes back with an empty catalog and KV store."""

    name = "consul"
    ready_what = "a leader at /v1/status/leader"

    def __init__(
        self, base_dir: Path, *, ready_timeout: float = 30.0, extra_args: Sequence[str] = ()
    ) -> None:
        super().__init__(base_dir, ready_timeout=ready_timeout)
        self.binary = find_binary("consul")
        (
            self.port,
            self.dns_port,
            self.serf_lan_port,
            self.serf_wan_port,
            self.server_port,
        ) = free_ports(5)
        self.http_port = self.port
        self.addr = f"{self.host}:{self.port}"
        self.url = f"http://{self.addr}"
        self.data_dir = self.base_dir / "data"
        self.node_name = f"harness-{self.port}"
        self.extra_args = list(extra_args)

    def _make_process(self) -> ManagedProcess:
        argv = [
            self.binary, "agent", "-dev",
            "-node", self.node_name,
            "-bind", self.host,
            "-client", self.host,
            "-http-port", str(self.port),
            "-https-port", "-1",
            "-dns-port", str(self.dns_port),
            "-grpc-port", "-1",
            "-grpc-tls-port", "-1",
            "-serf-lan-port", str(self.serf_lan_port),
            "-serf-wan-port", str(self.serf_wan_port),
            "-server-port", str(self.server_port),
            "-data-dir", str(self.data_dir),
            "-log-level", "info",
            *self.extra_args,
        ]  # fmt: skip
        return ManagedProcess(self.name, argv, self.log_path, cwd=self.base_dir)

    def _before_start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _is_ready(self) -> bool:
        status, body = http_request(f"{self.url}/v1/status/leader")
        return status == 200 and json.loads(body or b'""') not in ("", None)


# ----------------------------------------------------------------------- PostgreSQL


def _postgres_os_user() -> str | None:
    """The OS user to run PostgreSQL as: it refuses to run as root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as error:
        raise ServerStartError(
            "PostgreSQL cannot run as root and there is no 'postgres' user; "
            "run scripts/setup (it installs the Debian package postgresql, which creates it)"
        ) from error
    return "postgres"


_PRIVATE_ROOT_PREFIX = "morgan-pg-"


def _postmaster_alive(data_dir: Path) -> bool:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def remove_stale_postgres_dirs(max_age_s: float = 3600.0) -> None:
    """Remove private PostgreSQL roots left by a killed test run.

    Only roots older than max_age_s whose postmaster is not running go, so a
    concurrent test session's cluster is never touched.
    """
    now = time.time()
    for root in Path(tempfile.gettempdir()).glob(f"{_PRIVATE_ROOT_PREFIX}*"):
        with contextlib.suppress(OSError):
            if now - root.stat().st_mtime > max_age_s and not _postmaster_alive(root / "data"):
                shutil.rmtree(root, ignore_errors=True)


class PostgresServer(SingleProcessServer):
    """PostgreSQL 15 with a login role and database (both `morgan` by default).

    As root the cluster runs as the OS user postgres; its data directory then
    lives in a private directory under the system temp dir (pytest's temp
    dirs are closed to other users), linked from base_dir/postgres-data and
    removed by close(). fsync is off: test data need not survive a power cut,
    only a process restart.
    """

    name = "postgres"
    ready_what = "accepting password logins"

    def __init__(
        self,
        base_dir: Path,
        *,
        user: str = "morgan",
        database: str = "morgan",
        password: str | None = None,
        ready_timeout: float = 60.0,
        settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__(base_dir, ready_timeout=ready_timeout)
        self.postgres_bin = postgres_binary("postgres")
        self.initdb_bin = postgres_binary("initdb")
        self.psql_bin = postgres_binary("psql")
        self.os_user = _postgres_os_user()
        (self.port,) = free_ports(1)
        self.user = user
        self.database = database
        self.password = password or secrets.token_urlsafe(18)
        self.superuser = "postgres"
        self.settings = {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            **(settings or {}),
        }
        self._private_root: Path | None = None
        if self.os_user is None:
            root = self.base_dir / "postgres-data"
        else:
            remove_stale_postgres_dirs()
            root = Path(tempfile.mkdtemp(prefix=_PRIVATE_ROOT_PREFIX))
            self._private_root = root
            shutil.chown(root, self.os_user, self.os_user)
            os.chmod(root, 0o700)
            link = self.base_dir / "postgres-data"
            with contextlib.suppress(OSError):
                link.symlink_to(root)
            # The private root is outside pytest's temp dirs: never leave it behind.
            atexit.register(self.close)
        self.data_dir = root / "data"
        self.socket_dir = root / "socket"
        self.dsn = (
            f"postgresql://{self.user}:{urllib.parse.quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{self.database}"
        )
        # Superuser over the unix socket (trust auth; only this host's users reach it).
        self.admin_dsn = (
            f"postgresql://{self.superuser}@/postgres?host={self.socket_dir}&port={self.port}"
        )
        self._bootstrapped = False

    def _run_as_owner(self, argv: list[str], what: str) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n=== harness: {' '.join(argv)}\n".encode())
            log.flush()
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self.os_user,
                cwd=self.data_dir.parent,
                timeout=120,
                check=False,
            )
        if result.returncode != 0:
            raise ServerStartError(
                f"postgres: {what} failed with status {result.returncode}; "
                f"see {self.log_path}:\n{self.log_tail()}"
            )

    def _before_start(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self.os_user:
            for path in (self.data_dir, self.socket_dir):
                shutil.chown(path, self.os_user, self.os_user)
        os.chmod(self.data_dir, 0o700)
        self._run_as_owner(
            [
                self.initdb_bin, "-D", str(self.data_dir),
                "--username", self.superuser,
                "--auth-local", "trust", "--auth-host", "scram-sha-256",
                "--encoding", "UTF8", "--no-locale", "--no-sync",
            ],
            "initdb",
        )  # fmt: skip

    def _make_process(self) -> ManagedProcess:
        argv = [
            self.postgres_bin, "-D", str(self.data_dir),
            "-c", f"listen_addresses={self.host}",
            "-c", f"port={self.port}",
            "-c", f"unix_socket_directories={self.socket_dir}",
        ]  # fmt: skip
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        # SIGINT is PostgreSQL's "fast shutdown": it does not wait for clients.
        return ManagedProcess(
            self.name,
            argv,
            self.log_path,
            user=self.os_user,
            cwd=self.data_dir.parent,
            stop_signal=signal.SIGINT,
        )

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run SQL as the superuser over the unix socket; return psql's output."""
        result = subprocess.run(
            [
                self.psql_bin, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.socket_dir), "-p", str(self.port),
                "-U", self.superuser, "-d", database, "-c", sql,
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def _accepts_password_login(self) -> bool:
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "2"}
        result = subprocess.run(
            [
                self.psql_bin, "-X", "-A", "-t",
                "-h", self.host, "-p", str(self.port),
                "-U", self.user, "-d", self.database, "-c", "SELECT 1",
            ],
            capture_output=True, text=True, env=env, timeout=10, check=False,
        )  # fmt: skip
        return result.returncode == 0 and result.stdout.strip() == "1"

    def _is_ready(self) -> bool:
        result = subprocess.run(
            [postgres_binary("pg_isready"), "-q", "-h", self.host, "-p", str(self.port)],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        return result.returncode == 0

    def _after_ready(self) -> None:
        if not self._bootstrapped:
            exists = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{self.user}'").strip()
            if not exists:
                self.psql(f"CREATE ROLE \"{self.user}\" LOGIN CREATEDB PASSWORD '{self.password}'")
                self.psql(f'CREATE DATABASE "{self.database}" OWNER "{self.user}"')
            self._bootstrapped = True
        wait_until_ready(
            self.process,
            self._accepts_password_login,
            what=self.ready_what,
            timeout=self.ready_timeout,
        )

    def close(self) -> None:
        self.stop()
        if self._private_root is not None:
            shutil.rmtree(self._private_root, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.base_dir / "postgres-data").unlink()


# ---------------------------------------------------------------------------- Redis


def _redis_client(host: str, port: int) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: readiness polling does its own, and redis-py's default backoff
    # would turn one refused connection into seconds of waiting.
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )


class RedisServer(SingleProcessServer):
    """redis-server without persistence (a restart starts empty)."""

    name = "redis"
    ready_what = "PONG"

    def __init__(
        self,
        base_dir: Path,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 15.0,
    ) -> None:
        super().__init__(base_dir, ready_timeout=ready_timeout)
        self.binary = find_binary("redis-server")
        self.port = port if port is not None else free_ports(1)[0]
        self.url = f"redis://{self.host}:{self.port}/0"
        self.data_dir = self.base_dir / "data"
        self.extra_args = list(extra_args)

    def _before_start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _make_process(self) -> ManagedProcess:
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip
        return ManagedProcess(self.name, argv, self.log_path, cwd=self.data_dir)

    def client(self) -> Any:
        """A redis.Redis connected to this server."""
        return _redis_client(self.host, self.port)

    def _is_ready(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        finally:
            client.close()


CLUSTER_NODE_ARGS = [
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "5000",
]  # fmt: skip


class RedisCluster(ManagedServer):
    """A Redis Cluster of N masters (no replicas), formed with redis-cli --cluster create."""

    name = "redis-cluster"

    def __init__(self, base_dir: Path, *, masters: int = 3, ready_timeout: float = 30.0) -> None:
        super().__init__(base_dir)
        if masters < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 masters, got {masters}")
        self.redis_cli = find_binary("redis-cli")
        self.ready_timeout = ready_timeout
        # Each node also listens on its cluster bus port, port + 10000.
        ports = free_ports(masters, also_free_at_offset=10000)
        self.nodes = [
            RedisServer(
                self.base_dir / f"node-{port}",
                port=port,
                ready_timeout=ready_timeout,
                extra_args=CLUSTER_NODE_ARGS,
            )
            for port in ports
        ]
        self.startup_nodes = [(node.host, node.port) for node in self.nodes]
        self.ports = [node.port for node in self.nodes]
        self.url = self.nodes[0].url
        self._created = False

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        if not self._created:
            self._create()
            self._created = True
        self._wait_state_ok()

    def _create(self) -> None:
        argv = [
            self.redis_cli, "--cluster", "create",
            *[f"{host}:{port}" for host, port in self.startup_nodes],
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            log.write(f"\n=== harness: {' '.join(argv)}\n".encode())
            log.flush()
            result = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, timeout=60, check=False
            )
        if result.returncode != 0:
            self.stop()
            raise ServerStartError(
                f"redis-cli --cluster create failed with status {result.returncode}; "
                f"see {self.log_path}:\n{self.log_tail()}"
            )

    def cluster_state(self, node: RedisServer) -> str:
        client = node.client()
        try:
            info = client.execute_command("CLUSTER", "INFO")
        finally:
            client.close()
        if isinstance(info, bytes):
            info = info.decode()
        if isinstance(info, dict):
            return str(info.get("cluster_state", ""))
        for line in str(info).splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return ""

    def _wait_state_ok(self) -> None:
        for node in self.nodes:
            wait_until_ready(
                node.process,
                functools.partial(self._state_is_ok, node),
                what="cluster_state:ok",
                timeout=self.ready_timeout,
            )

    def _state_is_ok(self, node: RedisServer) -> bool:
        return self.cluster_state(node) == "ok"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def is_running(self) -> bool:
        return all(node.is_running() for node in self.nodes)


# -------------------------------------------------------------------------- Traefik


class TraefikServer(SingleProcessServer):
    """Traefik v3: entrypoint `web` at .url, API and /ping at .api_url,
    file provider watching .dynamic_dir."""

    name = "traefik"
    ready_what = "OK from /ping"

    def __init__(
        self, base_dir: Path, *, ready_timeout: float = 30.0, log_level: str = "INFO"
    ) -> None:
        super().__init__(base_dir, ready_timeout=ready_timeout)
        self.binary = find_binary("traefik")
        self.port, self.api_port = free_ports(2)
        self.url = f"http://{self.host}:{self.port}"
        self.api_url = f"http://{self.host}:{self.api_port}"
        self.dynamic_dir = self.base_dir / "dynamic"
        self.config_path = self.base_dir / "traefik.yml"
        self.access_log_path = self.base_dir / "access.log"
        self.log_level = log_level

    def static_config(self) -> dict[str, Any]:
        # Tests restart Traefik; its default 10 s graceful drain only slows them down.
        fast_stop = {"lifeCycle": {"graceTimeOut": "1s"}}
        return {
            "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
            "entryPoints": {
                "web": {"address": f"{self.host}:{self.port}", "transport": fast_stop},
                "traefik": {"address": f"{self.host}:{self.api_port}", "transport": fast_stop},
            },
            "ping": {"entryPoint": "traefik"},
            "api": {"insecure": True, "dashboard": False},
            "providers": {"file": {"directory": str(self.dynamic_dir), "watch": True}},
            "log": {"level": self.log_level, "noColor": True},
            "accessLog": {"filePath": str(self.access_log_path)},
        }

    def _before_start(self) -> None:
        self.dynamic_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.static_config(), sort_keys=False))

    def _make_process(self) -> ManagedProcess:
        argv = [self.binary, f"--configFile={self.config_path}"]
        return ManagedProcess(self.name, argv, self.log_path, cwd=self.base_dir)

    def _is_ready(self) -> bool:
        status, body = http_request(f"{self.api_url}/ping")
        return status == 200 and body.strip() == b"OK"

    def write_dynamic_config(self, name: str, config: dict[str, Any] | str) -> Path:
        """Write dynamic_dir/<name>.yml atomically (Traefik must never read half a file)."""
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        path = self.dynamic_dir / f"{name}.yml"
        staging = self.base_dir / f".{name}.yml.tmp"
        staging.write_text(text)
        staging.replace(path)
        return path

    def remove_dynamic_config(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dynamic_dir / f"{name}.yml").unlink()

    def routers(self) -> list[dict[str, Any]]:
        """The HTTP routers Traefik has loaded, from its API."""
        status, body = http_request(f"{self.api_url}/api/http/routers")
        if status != 200:
            raise RuntimeError(f"traefik API answered {status}: {body[:200]!r}")
        result: list[dict[str, Any]] = json.loads(body)
        return result


# ----------------------------------------------------------------------- Prometheus


class PrometheusServer(SingleProcessServer):
    """Prometheus with the lifecycle API on, so reload() re-reads config_path."""

    name = "prometheus"
    ready_what = "200 from /-/ready"

    def __init__(
        self,
        base_dir: Path,
        *,
        scrape_configs: list[dict[str, Any]] | None = None,
        scrape_interval: str = "1s",
        ready_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(base_dir, ready_timeout=ready_timeout)
        self.binary = find_binary("prometheus")
        (self.port,) = free_ports(1)
        self.url = f"http://{self.host}:{self.port}"
        self.config_path = self.base_dir / "prometheus.yml"
        self.data_dir = self.base_dir / "data"
        self.scrape_interval = scrape_interval
        self.scrape_configs: list[dict[str, Any]] = list(scrape_configs or [])
        self.extra_args = list(extra_args)

    def config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": self.scrape_configs,
        }

    def write_config(self) -> None:
        staging = self.base_dir / ".prometheus.yml.tmp"
        staging.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        staging.replace(self.config_path)

    def _before_start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self.write_config()

    def _make_process(self) -> ManagedProcess:
        argv = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
            *self.extra_args,
        ]
        return ManagedProcess(self.name, argv, self.log_path, cwd=self.base_dir)

    def _is_ready(self) -> bool:
        status, _ = http_request(f"{self.url}/-/ready")
        return status == 200

    def reload(self) -> None:
        """POST /-/reload; raises with Prometheus's answer if the config is rejected."""
        status, body = http_request(f"{self.url}/-/reload", method="POST", timeout=30)
        if status != 200:
            raise RuntimeError(
                f"prometheus rejected {self.config_path} on reload ({status}): "
                f"{body.decode(errors='replace').strip()}; fix the config and reload again"
            )

    def set_scrape_configs(self, scrape_configs: list[dict[str, Any]]) -> None:
        """Replace the scrape jobs, write the config and reload it."""
        self.scrape_configs = list(scrape_configs)
        self.write_config()
        self.reload()

    def add_scrape_config(self, scrape_config: dict[str, Any]) -> None:
        self.set_scrape_configs([*self.scrape_configs, scrape_config])

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query; return data.result."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = http_request(url, timeout=10)
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise RuntimeError(f"prometheus query {promql!r} failed ({status}): {answer}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for_query(
        self, promql: str, *, timeout: float = 20.0, interval: float = 0.25
    ) -> list[dict[str, Any]]:
        """Poll query(promql) until it returns a non-empty result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"prometheus returned no result for {promql!r} within {timeout:.0f}s; "
                    f"check the targets at {self.url}/api/v1/targets"
                )
            time.sleep(interval)
