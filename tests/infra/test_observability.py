"""Prometheus config and alert rules through promtool; dashboards' PromQL on a live Prometheus."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from infra.configs import observability as obs
from infra.placement import Plan

pytestmark = pytest.mark.integration


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing; scripts/setup installs Debian's prometheus package"
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("stack", ["homelab", "dev"])
def test_alert_rules_pass_promtool(
    stack: str, homelab_plan: Plan, dev_plan: Plan, tmp_path: Path
) -> None:
    plan = homelab_plan if stack == "homelab" else dev_plan
    rules = tmp_path / "alerts.yml"
    rules.write_text(obs.to_yaml(obs.alert_rules(plan)))
    result = _run("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 3 rules found" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yml"
    rules.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "sum(("}]}]})
    )
    assert _run("check", "rules", str(rules)).returncode != 0


CONSUL_SD_KEYS = {"server", "services", "scheme", "tls_config"}


def _without_consul_sd(document: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Debian's Prometheus is built without Consul discovery (the prom/prometheus image has
    it): check the consul_sd blocks' keys here, and let promtool check everything else with
    the same targets as file discovery."""
    targets = tmp_path / "targets.json"
    targets.write_text("[]")

    def swap(block: dict[str, Any]) -> None:
        for sd in block.pop("consul_sd_configs", []):
            assert set(sd) <= CONSUL_SD_KEYS, sd
            assert sd["server"].startswith("127.0.0.1:")
            block.setdefault("file_sd_configs", []).append({"files": [str(targets)]})

    for scrape in document["scrape_configs"]:
        swap(scrape)
    for am in document.get("alerting", {}).get("alertmanagers", []):
        swap(am)
    return document


def test_dev_prometheus_config_passes_promtool(dev_plan: Plan, tmp_path: Path) -> None:
    document = _without_consul_sd(obs.prometheus_config(dev_plan), tmp_path)
    rules = tmp_path / "alerts.yml"
    rules.write_text(obs.to_yaml(obs.alert_rules(dev_plan)))
    document["rule_files"] = [str(rules)]
    config = tmp_path / "prometheus.yml"
    config.write_text(obs.to_yaml(document))
    result = _run("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_homelab_prometheus_config_syntax(homelab_plan: Plan, tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    document = _without_consul_sd(obs.prometheus_config(homelab_plan), tmp_path)
    config.write_text(obs.to_yaml(document))
    result = _run("check", "config", "--syntax-only", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    scrape = obs.prometheus_config(homelab_plan)["scrape_configs"][0]
    assert scrape["consul_sd_configs"][0]["services"] == list(obs.MORGAN_SERVICES)
    assert scrape["scheme"] == "https"


def test_alertmanager_config_parses_in_amtool(homelab_plan: Plan, tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    assert amtool, "amtool is missing; scripts/setup installs Debian's prometheus-alertmanager"
    config = tmp_path / "alertmanager.yml"
    config.write_text(obs.to_yaml(obs.alertmanager_config(homelab_plan)))
    result = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _queries(plan: Plan) -> list[str]:
    rules = [r["expr"] for g in obs.alert_rules(plan)["groups"] for r in g["rules"]]
    return obs.dashboard_queries(obs.dashboards(plan)) + rules


def test_every_dashboard_and_alert_query_runs_on_prometheus(
    homelab_plan: Plan, prometheus_server: Any
) -> None:
    queries = _queries(homelab_plan)
    assert len(queries) >= 10
    for query in queries:
        response = httpx.get(
            f"{prometheus_server.url}/api/v1/query", params={"query": query}, timeout=10
        )
        body = response.json()
        assert body["status"] == "success", (query, body)


def test_prometheus_rejects_a_bad_query(prometheus_server: Any) -> None:
    response = httpx.get(
        f"{prometheus_server.url}/api/v1/query", params={"query": "sum(("}, timeout=10
    )
    assert response.json()["status"] == "error"


@pytest.mark.unit
def test_grafana_dashboards_use_the_provisioned_datasource(homelab_plan: Plan) -> None:
    uids = {d["uid"] for d in obs.grafana_datasources(homelab_plan)["datasources"]}
    assert uids == {"prometheus", "loki"}
    for board in obs.dashboards(homelab_plan).values():
        assert board["uid"] and board["panels"]
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] in uids


@pytest.mark.unit
def test_promtail_ships_to_the_loki_host(homelab_plan: Plan) -> None:
    config = obs.promtail_config(homelab_plan, "h4")
    assert config["clients"][0]["url"] == "https://h3.lan:3100/loki/api/v1/push"
    assert config["clients"][0]["external_labels"] == {"host": "h4"}
    loki = obs.loki_config(homelab_plan)
    assert loki["limits_config"]["retention_period"] == "720h"
    assert loki["compactor"]["retention_enabled"] is True
