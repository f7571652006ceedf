"""Chaos on the lab's fleet (the one `lab_fleet` of the run): each scenario breaks one
thing under a steady load of text turns, mends it, and reports what the load saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from morgan.deploy.engine import DockerEngine
from morgan.deploy.rollout import DeployReport, api_key_for, engines, load_outputs
from morgan.lab import stack as st
from morgan.lab.polling import NotYet, poll

from infra.config import MorganStackConfig
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
        self.ca_file = tmp / "ca.pem"
        self.ca_file.write_text(self.outputs["ca_certificate"])
        self.api_key = api_key_for(config, self.outputs, self.ca_file, owner="chaos")
        self.gateway_url: str = self.outputs["gateway_url"]

    def engine(self, spec: ContainerSpec) -> DockerEngine:
        return self.engines[spec.host]

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

    def psql(self, sql: str) -> str:
        """A query on the Patroni leader (whichever member that is now)."""
        for spec in self.deployment.of_role("postgres-primary", "postgres-standby"):
            engine = self.engine(spec)
            proc = engine.run("exec", spec.name, "psql", "-h", "/var/run/postgresql", "-U",
                              self.config.postgres.user, "-d", self.config.postgres.database,
                              "-Atc", sql, check=False, timeout=60)  # fmt: skip
            if proc.returncode != 0:
                continue
            role = engine.text("exec", spec.name, "psql", "-h", "/var/run/postgresql", "-U",
                               self.config.postgres.user, "-d", "postgres", "-Atc",
                               "SELECT pg_is_in_recovery()", timeout=60)  # fmt: skip
            if role == "f":
                return proc.stdout.decode().strip()
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
