"""The lab stack's model: Patroni, Redis replicas placed so no host holds a master and its
own replica, memory in PostgreSQL, and the settings that refuse what cannot work."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from morgan.lab import hosts as lab

from infra.config import StackConfigError, load_stack_file, parse_stack_config
from infra.configs import patroni as patroni_cfg
from infra.deployment import build_deployment
from infra.placement import make_plan
from tests.infra.conftest import ROOT, raw_fleet

pytestmark = pytest.mark.unit

LAB_FILE = ROOT / "stacks" / "Pulumi.lab.yaml"


def test_lab_addresses_are_the_lab_hosts_and_registry() -> None:
    config = load_stack_file(LAB_FILE)
    for index, host in enumerate(config.hosts, start=1):
        assert host.address == lab.host_address(lab.SUBNET, index)
        scheme = "tcp://" if host.name in lab.TLS_HOSTS else "ssh://morgan@"
        assert host.docker.startswith(scheme + host.address)
    assert config.images.registry == f"{lab.host_address(lab.SUBNET, 0)}:{lab.REGISTRY_PORT}"
    used = {s.image for s in build_deployment(make_plan(config), ROOT).rendered_specs()}
    assert all(image.startswith(config.images.registry + "/") for image in used), used


def test_each_master_has_its_replica_on_the_next_host() -> None:
    plan = make_plan(load_stack_file(LAB_FILE))
    masters = [r.host for r in plan.of_role("redis")]
    replicas = [r.host for r in plan.of_role("redis-replica")]
    assert masters == ["h1", "h3", "h4"]
    assert replicas == ["h3", "h4", "h1"]
    assert all(m != r for m, r in zip(masters, replicas, strict=True))
    script = next(s for s in build_deployment(plan, ROOT).specs if s.role == "redis-cluster-create")
    body = script.command[-1]
    assert "--cluster-replicas 0" in body
    assert body.count("--cluster-slave") == 3


def test_patroni_members_sync_and_timing() -> None:
    plan = make_plan(load_stack_file(LAB_FILE))
    assert patroni_cfg.members(plan) == ("h1", "h3")
    doc = patroni_cfg.patroni_config(plan, "h3")
    dcs = doc["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    assert doc["postgresql"]["connect_address"] == "10.213.87.13:5432"
    assert doc["postgresql"]["parameters"] == {"unix_socket_directories": "/var/run/postgresql"}
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert doc["postgresql"]["remove_data_directory_on_rewind_failure"] is True
    assert dcs["postgresql"]["parameters"]["ssl_key_file"] == patroni_cfg.PG_KEY_PATH
    core = next(s for s in build_deployment(plan, ROOT).specs if s.role == "core")
    dsn = core.env["MORGAN_CORE_POSTGRES_DSN"]
    assert dsn.startswith(
        "postgresql://morgan_app@postgres-primary.service.consul:5432,"
        "postgres-standby.service.consul:5432/"
    )
    assert "target_session_attrs=read-write" in dsn
    assert core.env["MORGAN_CORE_MEMORY_STORE"] == "postgres"
    assert core.env["MORGAN_CORE_REDIS_TLS"] == "true"
    assert not any(s.role == "qdrant" for s in build_deployment(plan, ROOT).specs)


def _with(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    raw[key] = {**raw.get(key, {}), **value}
    return raw


def test_patroni_without_a_standby_is_refused() -> None:
    raw = _with(raw_fleet(LAB_FILE), "postgres", {"standby": None})
    raw["postgres"].pop("standby")
    with pytest.raises(StackConfigError, match=r"postgres: .*patroni.*add postgres.standby"):
        parse_stack_config(raw)


def test_replicas_without_a_cluster_are_refused() -> None:
    raw = _with(raw_fleet(LAB_FILE), "redis", {"mode": "single", "nodes": ["h1"]})
    with pytest.raises(StackConfigError, match="only a cluster has replicas"):
        parse_stack_config(raw)


def test_the_lab_file_is_plain_yaml_with_a_note_on_what_stands_in() -> None:
    text = LAB_FILE.read_text()
    assert "no Qdrant server binary" in text and "no GPU" in text and "AGPL" in text
    assert yaml.safe_load(text)["config"]["morgan:fleet"]["stack"] == "lab"


def test_core_holds_the_gateways_rate_budgets() -> None:
    """One budget per client: Traefik's rate limits and core's (which also counts
    WebSocket turns) are the same numbers, from the stack's gateway section."""
    config = load_stack_file(LAB_FILE)
    kv = build_deployment(make_plan(config), ROOT).kv
    assert kv["morgan/config/core/rate_limit_per_minute"] == str(config.gateway.api_rate_per_minute)
    assert kv["morgan/config/core/audio_rate_limit_per_minute"] == str(
        config.gateway.audio_rate_per_minute
    )
