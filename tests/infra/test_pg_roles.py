"""The application role step (infra.configs.pg_roles) on a real PostgreSQL 15, as the
dev stack's container runs it: on data that predates the role, twice, with a rotated
password. And pg_hba: remote logins only from the stack's hosts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.config import parse_stack_config
from infra.configs import data as data_cfg
from infra.configs import pg_roles
from infra.placement import Plan, make_plan
from tests.harness.binaries import postgres_binary
from tests.harness.servers import PostgresServer
from tests.infra.conftest import ROOT, raw_fleet

LAB_FILE = ROOT / "stacks" / "Pulumi.lab.yaml"

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PostgresServer]:
    """A cluster whose `morgan` is the administrator (as the stack's POSTGRES_USER), with
    a table made before the application role existed."""
    with PostgresServer.run(tmp_path) as pg:
        pg.psql("ALTER ROLE morgan SUPERUSER; ALTER DATABASE morgan OWNER TO morgan")
        pg.psql(
            "SET ROLE morgan;"
            " CREATE TABLE conversations (id bigserial PRIMARY KEY, user_id text);"
            " INSERT INTO conversations (user_id) VALUES ('alice');"
            " CREATE SEQUENCE loose_counter;",
            database="morgan",
        )
        yield pg


def _run_step(pg: PostgresServer, plan: Plan, app_password: str) -> str:
    script = pg_roles.app_role_script(plan).replace(f"port={data_cfg.PG_PORT}", f"port={pg.port}")
    # The step reads both passwords from its secret files: here, files of the test's own.
    for file, value in ((pg_roles.ADMIN_PASSWORD, pg.password),
                        (pg_roles.APP_PASSWORD, app_password)):  # fmt: skip
        local = pg.base_dir / file.variable
        local.write_text(value + "\n")
        script = script.replace(file.path, str(local))
    psql_dir = str(Path(postgres_binary("psql")).parent)
    env = {"PATH": f"{psql_dir}:{os.environ['PATH']}"}
    result = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _as_app(pg: PostgresServer, password: str, sql: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    return subprocess.run(
        [postgres_binary("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
         "-h", pg.host, "-p", str(pg.port), "-U", "morgan_app", "-d", "morgan", "-c", sql],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_the_app_role_owns_the_data_without_a_superusers_rights(
    server: PostgresServer, dev_plan: Plan
) -> None:
    out = _run_step(server, dev_plan, "first-app-password")
    assert "role morgan_app owns database morgan" in out
    flags = server.psql(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
        " FROM pg_roles WHERE rolname = 'morgan_app'"
    ).strip()
    assert flags == "f|f|f|f|f", flags
    owners = server.psql(
        "SELECT relname || ':' || pg_get_userbyid(relowner) FROM pg_class"
        " WHERE relname IN ('conversations', 'conversations_id_seq', 'loose_counter')"
        " ORDER BY relname",
        database="morgan",
    ).split()
    assert owners == ["conversations:morgan_app", "conversations_id_seq:morgan_app",
                      "loose_counter:morgan_app"]  # fmt: skip
    # Core's work: read the old rows, write, migrate.
    work = _as_app(server, "first-app-password",
                   "INSERT INTO conversations (user_id) VALUES ('bob');"
                   " CREATE TABLE turns (id int); ALTER TABLE conversations ADD COLUMN t text;"
                   " SELECT string_agg(user_id, ',' ORDER BY id) FROM conversations")  # fmt: skip
    assert work.returncode == 0, work.stderr
    assert work.stdout.strip().splitlines()[-1] == "alice,bob"
    # What a superuser may do, and the application role may not.
    for sql, refusal in {
        "CREATE ROLE mallory LOGIN": "permission denied to create role",
        "CREATE DATABASE elsewhere": "permission denied to create database",
        "SELECT rolpassword FROM pg_authid": "permission denied for table pg_authid",
        "COPY conversations TO PROGRAM 'id'": "pg_execute_server_program",
        "ALTER ROLE morgan_app SUPERUSER": "must be superuser to alter superuser roles",
    }.items():
        refused = _as_app(server, "first-app-password", sql)
        assert refused.returncode != 0, (sql, refused.stdout)
        assert refusal in refused.stderr, (sql, refused.stderr)


def test_the_step_runs_again_and_rotates_the_password(
    server: PostgresServer, dev_plan: Plan
) -> None:
    _run_step(server, dev_plan, "first-app-password")
    _run_step(server, dev_plan, "rotated-app-password")
    assert _as_app(server, "rotated-app-password", "SELECT 1").stdout.strip() == "1"
    old = _as_app(server, "first-app-password", "SELECT 1")
    assert old.returncode != 0
    assert 'password authentication failed for user "morgan_app"' in old.stderr
    assert server.psql("SELECT count(*) FROM conversations", database="morgan").strip() == "1"


def test_remote_logins_come_only_from_the_stacks_hosts() -> None:
    raw = raw_fleet(LAB_FILE)
    plan = make_plan(parse_stack_config(raw))
    rules = data_cfg.pg_hba_rules(plan)
    remote = [r for r in rules if r.startswith("hostssl")]
    sources = sorted({r.split()[3] for r in remote})
    assert sources == [f"{h.address}/32" for h in plan.hosts]
    assert not [r for r in rules if "0.0.0.0/0" in r or "::/0" in r], rules
    # The application role reaches only its database; nobody else but the administrator.
    users = {(r.split()[1], r.split()[2]) for r in remote}
    assert users == {("replication", "replicator"), ("morgan", "morgan_app"), ("all", "morgan")}
    # Each also shows a certificate of the stack's CA; the dev stack has no internal TLS.
    assert all(r.endswith("scram-sha-256 clientcert=verify-ca") for r in remote), remote
    dev = make_plan(parse_stack_config(raw_fleet(ROOT / "stacks" / "Pulumi.dev.yaml")))
    assert not [r for r in data_cfg.pg_hba_rules(dev) if "clientcert" in r]
    # Networks of the operator's own choosing replace the host list.
    raw.setdefault("postgres", {})["client_networks"] = ["10.213.87.0/28"]
    chosen = make_plan(parse_stack_config(raw))
    assert {r.split()[3] for r in data_cfg.pg_hba_rules(chosen)
            if r.startswith("hostssl")} == {"10.213.87.0/28"}  # fmt: skip


def test_the_app_role_must_be_its_own() -> None:
    raw = raw_fleet(LAB_FILE)
    raw.setdefault("postgres", {})["app_user"] = "morgan"
    with pytest.raises(ValueError, match="must be a role of its own"):
        parse_stack_config(raw)
