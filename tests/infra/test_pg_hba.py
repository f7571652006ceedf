"""Where PostgreSQL takes sessions from: the fleet's hosts, never every address."""

from __future__ import annotations

from typing import Any

import pytest

from infra.configs import data as data_cfg
from infra.placement import Plan
from tests.infra.conftest import plan_from

pytestmark = pytest.mark.unit


def _remote_sources(plan: Plan) -> set[str]:
    return {line.split()[3] for line in data_cfg.pg_hba_rules(plan) if line.startswith("host")
            and not line.startswith("host all all 127.0.0.1/32")}  # fmt: skip


def test_a_fleet_addressed_by_ip_lists_each_host(homelab_raw: dict[str, Any]) -> None:
    for i, host in enumerate(homelab_raw["hosts"], start=11):
        host["address"] = f"192.168.1.{i}"
    plan = plan_from(homelab_raw)
    assert _remote_sources(plan) == {"192.168.1.11/32", "192.168.1.12/32", "192.168.1.13/32",
                                     "192.168.1.14/32"}  # fmt: skip
    rules = data_cfg.pg_hba_rules(plan)
    assert "hostssl replication replicator 192.168.1.13/32 scram-sha-256" in rules
    assert not [r for r in rules if "0.0.0.0/0" in r or "::/0" in r]


def test_names_fall_back_to_the_servers_own_subnets(homelab_plan: Plan) -> None:
    assert [h.address for h in homelab_plan.hosts] == ["h1.lan", "h2.lan", "h3.lan", "h4.lan"]
    assert _remote_sources(homelab_plan) == {"samenet"}


def test_patroni_gets_its_members_postgres_database(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["postgres"]["ha"] = "patroni"
    rules = data_cfg.pg_hba_rules(plan_from(homelab_raw))
    assert "hostssl postgres morgan samenet scram-sha-256" in rules
