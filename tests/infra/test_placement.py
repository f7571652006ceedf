"""The placement function: the spec's homelab table, capability rules, spreading, pins."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from infra.placement import ROLE_NAMES, PlacementError, Plan
from tests.infra.conftest import plan_from

pytestmark = pytest.mark.unit

# The spec's table (issue 5), one entry per replica; observability sits on h3 by the stack file.
HOMELAB_EXPECTED = {
    "h1": sorted(
        [
            "core",
            "core",
            "tts",
            "stt",
            "consul-server",
            "consul-agent",
            "postgres-primary",
            "redis",
            "qdrant",
            "traefik",
            "promtail",
            "node-exporter",
            "postgres-exporter",
            "redis-exporter",
            "dcgm-exporter",
        ]
    ),
    "h2": sorted(["tts", "stt", "consul-agent", "promtail", "node-exporter", "dcgm-exporter"]),
    "h3": sorted(
        [
            "core",
            "llm",
            "llm",
            "vad",
            "consul-server",
            "consul-agent",
            "postgres-standby",
            "redis",
            "prometheus",
            "alertmanager",
            "grafana",
            "loki",
            "promtail",
            "node-exporter",
            "postgres-exporter",
            "redis-exporter",
        ]
    ),
    "h4": sorted(
        [
            "core",
            "llm",
            "vad",
            "consul-server",
            "consul-agent",
            "redis",
            "promtail",
            "node-exporter",
            "redis-exporter",
        ]
    ),
}


def test_homelab_plan_equals_the_spec_table(homelab_plan: Plan) -> None:
    assert homelab_plan.by_host() == HOMELAB_EXPECTED


def test_morgan_plan_json_prints_the_table() -> None:
    from morgan.cli.main import app

    result = CliRunner().invoke(app, ["plan", "--stack", "homelab", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == HOMELAB_EXPECTED


def test_morgan_plan_table_names_every_host() -> None:
    from morgan.cli.main import app

    result = CliRunner().invoke(app, ["plan", "--stack", "homelab"])
    assert result.exit_code == 0, result.output
    for host in ("h1", "h2", "h3", "h4"):
        assert host in result.output


def test_morgan_plan_reports_a_bad_stack_without_a_traceback(tmp_path: Any) -> None:
    from morgan.cli.main import app

    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  morgan:fleet:\n    stack: bad\n    domain: x\n    hosts: []\n")
    result = CliRunner().invoke(app, ["plan", "--file", str(bad)])
    assert result.exit_code == 2
    assert "morgan:fleet" in result.output and "add at least one" in result.output


def test_dev_plan_is_one_machine_with_one_of_each(dev_plan: Plan) -> None:
    assert dev_plan.by_host() == {
        "local": sorted(
            [
                "core",
                "llm",
                "stt",
                "tts",
                "vad",
                "consul-server",
                "postgres-primary",
                "redis",
                "traefik",
                "prometheus",
            ]
        )
    }


def test_every_role_name_is_one_of_the_documented_names(homelab_plan: Plan, dev_plan: Plan) -> None:
    for plan in (homelab_plan, dev_plan):
        assert {r.role for r in plan.replicas} <= set(ROLE_NAMES)


def test_gpu_services_land_only_on_gpu_hosts(homelab_plan: Plan) -> None:
    gpu_hosts = {h.name for h in homelab_plan.hosts if h.has_gpu}
    for role in ("stt", "tts"):
        assert set(homelab_plan.hosts_of(role)) == gpu_hosts


def test_cpu_engine_prefers_cpu_only_hosts(homelab_plan: Plan) -> None:
    hosts = [homelab_plan.config.host(h) for h in homelab_plan.hosts_of("llm")]
    assert hosts and all(not h.has_gpu for h in hosts)


def test_replicas_spread_with_counts_differing_by_at_most_one(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["services"]["llm"]["replicas"] = 5
    plan = plan_from(homelab_raw)
    counts = [plan.by_host()[h].count("llm") for h in ("h3", "h4")]
    assert sorted(counts) == [2, 3]


def test_hosts_list_restricts_candidates(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["services"]["core"] = {"replicas": 3, "hosts": ["h2", "h4"]}
    plan = plan_from(homelab_raw)
    assert [r.host for r in plan.of_role("core")] == ["h2", "h4", "h2"]


def test_pin_to_a_host_without_gpu_fails_for_cuda(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["services"]["stt"]["pin"] = {"h3": 2}
    with pytest.raises(PlacementError, match=r"services\.stt\.pin.*h3.*device: cpu"):
        plan_from(homelab_raw)


def test_gpu_service_with_no_gpu_host_fails_naming_the_fix(homelab_raw: dict[str, Any]) -> None:
    for host in homelab_raw["hosts"]:
        host.pop("gpu", None)
    with pytest.raises(PlacementError, match=r"services\.stt: device 'cuda' needs a host"):
        plan_from(homelab_raw)


def test_redis_cluster_needs_three_hosts(homelab_raw: dict[str, Any]) -> None:
    homelab_raw["hosts"] = homelab_raw["hosts"][:2]
    for key in ("core", "vad"):
        homelab_raw["services"][key] = {"replicas": 2}
    homelab_raw["consul"] = {"servers": ["h1"]}
    homelab_raw["redis"] = {"mode": "cluster"}
    homelab_raw["postgres"] = {"primary": "h1"}
    homelab_raw["observability"] = {"host": "h1"}
    with pytest.raises(PlacementError, match=r"redis\.mode: 'cluster' needs three hosts"):
        plan_from(homelab_raw)


def test_plan_is_deterministic(homelab_raw: dict[str, Any]) -> None:
    assert plan_from(homelab_raw) == plan_from(homelab_raw)


def test_replica_indexes_count_per_role(homelab_plan: Plan) -> None:
    assert [r.index for r in homelab_plan.of_role("core")] == [1, 2, 3, 4]
