"""Chaos on the lab's fleet (the one `lab_fleet` of the run): each scenario breaks one
thing under a steady load of text turns, mends it, and reports what the load saw."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from morgan.deploy.engine import DockerEngine
from morgan.deploy.outputs import load_outputs, write_ca_file
from morgan.deploy.rollout import DeployReport, api_key_for, engines
from morgan.lab import stack as st
from morgan.lab.polling import NotYet, poll

from infra.config import MorganStackConfig
from infra.configs.patroni import RUN_CONFIG_PATH
from infra.deployment import Deployment, build_deployment
from infra.model import ContainerSpec
from infra.placement import make_plan

ROOT = Path(__file__).resolve().parents[2]


class Fleet:
    """The deployed lab: its plan, its hosts' engines, a key for the gateway."""

    def __init__(self, config: MorganStackConfig, tmp: Path) -> None:
        self.config = config
        self.deployment: Deployment = build_deployment(make_plan(config), ROOT)
        self.engines: dict[str, DockerEngine] = engines(config, ROOT)
        self.outputs: dict[str, Any] = load_outputs(st.paths("lab", ROOT))
        self.ca_file = write_ca_file(self.outputs, tmp)
        self.api_key = api_key_for(config, self.outputs, self.ca_file, owner="chaos",
                                   scopes=("admin",))  # fmt: skip
        self.gateway_url: str = self.outputs["gateway_url"]

    def api(self, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request to the gateway with `key`."""
        ca = ssl.create_default_context(cafile=str(self.ca_file))
        with httpx.Client(base_url=self.gateway_url, verify=ca, timeout=60) as c:
            return c.request(method, path, headers={"X-API-Key": key}, **kw)

    def turns(self, key: str, conversation_id: str) -> list[dict[str, Any]]:
        """The conversation's turns as its owner reads them through the gateway."""
        resp = self.api(key, "GET", f"/api/conversations/{conversation_id}")
        assert resp.status_code == 200, resp.text
        return list(resp.json()["turns"])

    def memories(self, key: str, query: str) -> set[str]:
        """The texts a memory search of the key's owner finds (at most 10)."""
        resp = self.api(key, "GET", "/api/memory/search", params={"q": query, "k": 10})
        assert resp.status_code == 200, resp.text
        return {hit["text"] for hit in resp.json()["results"]}

    def engine(self, spec: ContainerSpec) -> DockerEngine:
        return self.engines[spec.host]

    def consul_exec(
        self, spec: ContainerSpec, script: str, *, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """`script` (shell) in a Consul container, as the operator: the management token
        comes on standard input (never on a command line, and not the container's own
        scoped token)."""
        token = self.outputs["consul_management_token"]
        # The container's own token file would win over the variable: drop it.
        wrapped = (
            "read -r CONSUL_HTTP_TOKEN; export CONSUL_HTTP_TOKEN; unset CONSUL_HTTP_TOKEN_FILE;"
            f" {script}"
        )
        return self.engine(spec).run("exec", "-i", spec.name, "sh", "-c", wrapped,
                                     stdin=f"{token}\n".encode(), check=check,
                                     timeout=60)  # fmt: skip

    def state(self, spec: ContainerSpec) -> str:
        fmt = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
        return self.engine(spec).text("inspect", "-f", fmt, spec.name, timeout=60)

    def wait_healthy(self, spec: ContainerSpec, timeout: float = 180) -> float:
        """Seconds until the container runs healthy again."""
        import time

        started = time.monotonic()

        def healthy() -> None:
            state = self.state(spec)
            if state != "running healthy":
                raise NotYet(state)

        poll(healthy, what=f"{spec.host}/{spec.name} healthy", timeout=timeout, interval=1)
        return time.monotonic() - started

    def pg_members(self) -> list[ContainerSpec]:
        return list(self.deployment.of_role("postgres-primary", "postgres-standby"))

    def _psql(self, spec: ContainerSpec, database: str, sql: str) -> str | None:
        proc = self.engine(spec).run("exec", spec.name, "psql", "-h", "/var/run/postgresql",
                                     "-U", self.config.postgres.user, "-d", database,
                                     "-Atc", sql, check=False, timeout=60)  # fmt: skip
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def pg_role(self, spec: ContainerSpec) -> str:
        """'primary' or 'replica' as that member's PostgreSQL says, or 'down'."""
        answer = self._psql(spec, "postgres", "SELECT pg_is_in_recovery()")
        return {"f": "primary", "t": "replica"}.get(answer or "", "down")

    def wait_pg_role(self, spec: ContainerSpec, role: str, what: str) -> None:
        def check() -> None:
            if (now := self.pg_role(spec)) != role:
                raise NotYet(now)

        poll(check, what=what, timeout=120, interval=0.5)

    def lead_postgres_as_planned(self) -> None:
        """The plan's postgres-primary member leads: a switchover to it when the other
        member leads (after a failover, or when the other won the bootstrap), once it is
        the synchronous standby (Patroni switches over only to that one)."""
        planned = next(iter(self.deployment.of_role("postgres-primary")))
        if self.pg_role(planned) == "primary":
            return
        leader = next(m for m in self.pg_members() if m is not planned)

        def sync_standby() -> None:
            state = self.psql("SELECT application_name, state, sync_state FROM pg_stat_replication")
            if state != f"{planned.host}|streaming|sync":
                raise NotYet(state)

        poll(sync_standby, what=f"{planned.host} the sync standby", timeout=120, interval=1)
        self.engine(leader).run("exec", leader.name, "patronictl", "-c", RUN_CONFIG_PATH,
                                "switchover", "--leader", leader.host, "--candidate",
                                planned.host, "--force", timeout=120)  # fmt: skip
        self.wait_pg_role(planned, "primary", f"{planned.host} the leader (switched over)")
        self.wait_pg_role(leader, "replica", f"{leader.host} a replica (switched over)")
        print(f"[postgres] switched over: {planned.host} leads, as planned")

    def psql(self, sql: str) -> str:
        """A query on the Patroni leader (whichever member that is now)."""
        for spec in self.pg_members():
            if self.pg_role(spec) == "primary":
                answer = self._psql(spec, self.config.postgres.database, sql)
                if answer is not None:
                    return answer
        raise AssertionError("no PostgreSQL leader answered")

    def stored(self, turn_ids: list[str]) -> dict[str, int]:
        """How many times each turn id is stored."""
        if not turn_ids:
            return {}
        listed = ",".join(f"'{t}'" for t in turn_ids)
        rows = self.psql(
            f"SELECT id, count(*) FROM turns WHERE id IN ({listed}) GROUP BY id"
        ).splitlines()
        return {row.split("|")[0]: int(row.split("|")[1]) for row in rows if row}


@pytest.fixture(scope="session")
def fleet(lab_fleet: DeployReport, tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return Fleet(st.load_config("lab", ROOT), tmp_path_factory.mktemp("chaos"))
