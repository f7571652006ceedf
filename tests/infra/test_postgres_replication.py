"""The primary's settings, pg_hba and init script, and a standby cloned the way the plan says,
on real PostgreSQL 15 processes: a row written on the primary shows on the standby."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from infra.configs import data as data_cfg
from infra.placement import Plan
from tests.harness.binaries import postgres_binary
from tests.harness.servers import PostgresServer
from tests.infra.conftest import plan_from

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _loopback_plan(homelab_raw: dict[str, Any]) -> Plan:
    homelab_raw["hosts"][0]["address"] = "127.0.0.1"  # h1, the primary
    homelab_raw["security"]["internal_tls"] = False
    return plan_from(homelab_raw)


def _settings(plan: Plan, hba: Path) -> dict[str, str]:
    args = data_cfg.pg_settings(plan, plan.hosts_of("postgres-primary")[0])
    pairs = dict(args[i + 1].split("=", 1) for i in range(0, len(args), 2))
    pairs.pop("listen_addresses")  # the harness listens on loopback
    pairs["hba_file"] = str(hba)
    return pairs


def _owned_file(server: PostgresServer, name: str, text: str) -> Path:
    path = server.data_dir.parent / name
    path.write_text(text)
    if server.os_user:
        shutil.chown(path, server.os_user, server.os_user)
    return path


def test_standby_streams_from_primary(homelab_raw: dict[str, Any], tmp_path: Path) -> None:
    plan = _loopback_plan(homelab_raw)
    password = secrets.token_urlsafe(12)
    replication_password = secrets.token_urlsafe(12)
    primary = PostgresServer(tmp_path / "primary", password=password)
    hba = _owned_file(primary, "pg_hba.conf", data_cfg.pg_hba(plan))
    primary.settings.update(_settings(plan, hba))
    standby: PostgresServer | None = None
    try:
        primary.start()
        assert primary.psql("SHOW wal_level").strip() == "replica"

        # The primary's init script, verbatim, as the image's entrypoint runs it.
        script = tmp_path / "10-replication.sh"
        # It reads the password from its secret file: here, a file of the test's own.
        password_file = tmp_path / "replication-password"
        password_file.write_text(replication_password + "\n")
        text = data_cfg.primary_init_script(plan)
        script.write_text(text.replace(data_cfg.REPLICATION_PASSWORD.path, str(password_file)))
        env = {
            **os.environ,
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": "postgres",
            "PGHOST": str(primary.socket_dir),
            "PGPORT": str(primary.port),
            "PATH": f"{Path(postgres_binary('psql')).parent}:{os.environ['PATH']}",
        }
        subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True, timeout=60)
        assert primary.psql("SELECT slot_name FROM pg_replication_slots").split() == ["standby_h3"]

        # Clone it the way the standby's entrypoint does (same flags, slot and role).
        entry = data_cfg.standby_entrypoint(plan, "h3")
        assert "pg_basebackup -h 127.0.0.1 -p 5432 -U replicator" in entry
        assert "-X stream -R -c fast -S standby_h3" in entry
        standby = PostgresServer(tmp_path / "standby", password=password)
        standby_hba = _owned_file(standby, "pg_hba.conf", data_cfg.pg_hba(plan))
        standby.settings.update(_settings(plan, standby_hba))
        standby.data_dir.mkdir(mode=0o700)
        if standby.os_user:
            shutil.chown(standby.data_dir, standby.os_user, standby.os_user)
        slot = re.search(r"-S (\S+)", entry)
        assert slot is not None
        subprocess.run(
            [postgres_binary("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
             "-U", "replicator", "-D", str(standby.data_dir), "-X", "stream", "-R",
             "-c", "fast", "-S", slot.group(1)],
            env={**os.environ, "PGPASSWORD": replication_password},
            user=standby.os_user, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        standby.socket_dir.mkdir(exist_ok=True)
        if standby.os_user:
            shutil.chown(standby.socket_dir, standby.os_user, standby.os_user)
        standby.start()
        assert standby.psql("SELECT pg_is_in_recovery()").strip() == "t"

        primary.psql("CREATE TABLE replicated (v text); INSERT INTO replicated VALUES ('hello')")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if standby.psql("SELECT v FROM replicated").strip() == "hello":
                    break
            except RuntimeError:
                pass  # the table has not arrived yet
            time.sleep(0.2)
        else:
            raise AssertionError("the row written on the primary never reached the standby")
        state = primary.psql("SELECT state FROM pg_stat_replication").strip()
        assert state == "streaming"
    finally:
        if standby is not None:
            standby.close()
        primary.close()
