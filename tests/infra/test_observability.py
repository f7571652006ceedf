"""Prometheus config and alert rules through promtool; dashboards' PromQL on a live Prometheus."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from infra.configs import alerting
from infra.configs import dashboards as dash
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
    rules.write_text(obs.to_yaml(alerting.alert_rules(plan)))
    result = _run("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    # Down, errors, latency, one replicas-below-plan rule per planned service; where the
    # exporters run (homelab, not the dev stack) the host's down and disk rules,
    # PostgreSQL's down, lag and not-streaming, Redis's down and cluster state.
    services = len(alerting.planned_replicas(plan))
    assert services >= 1
    # The homelab's internal TLS adds the certificate expiry rule.
    exporter_rules = 2 + 3 + 2 + 1 if stack == "homelab" else 0
    assert f"SUCCESS: {3 + services + exporter_rules} rules found" in result.stdout


def test_the_certificate_alert_fires_three_weeks_before_the_end(
    homelab_plan: Plan, tmp_path: Path
) -> None:
    """promtool's rule unit test, at 2 h into a clock starting at 0: core's certificate
    ends in 20 days (fires), stt's in 25 (a deploy renews it; no alert), core's CA in
    a year."""
    rules = tmp_path / "alerts.yml"
    rules.write_text(obs.to_yaml(alerting.alert_rules(homelab_plan)))
    day = 86400
    series = {
        'service="morgan-core",host="h1",kind="certificate"': 20 * day,
        'service="morgan-stt",host="h2",kind="certificate"': 25 * day,
        'service="morgan-core",host="h1",kind="ca"': 365 * day,
    }
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"{alerting.CERT_EXPIRY}{{{labels}}}", "values": f"{end}x180"}
                    for labels, end in series.items()
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "2h",
                        "alertname": "MorganCertificateExpiring",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "service": "morgan-core",
                                    "host": "h1",
                                    "kind": "certificate",
                                },
                                "exp_annotations": {
                                    "summary": "the TLS certificate of morgan-core on h1 ends"
                                    f" within {alerting.CERT_EXPIRY_WARN_DAYS} days",
                                    "description": "It ends in 19d 22h 0m 0s. `pulumi up` (or"
                                    " `morgan deploy`) renews every certificate that ends"
                                    " within 30 days, and the CA with them; run it"
                                    " (docs/operations.md, rotate certificates and secrets).",
                                },
                            }
                        ],
                    },
                    # Not before it has held for an hour.
                    {
                        "eval_time": "50m",
                        "alertname": "MorganCertificateExpiring",
                        "exp_alerts": [],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(test))
    result = _run("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


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
    rules.write_text(obs.to_yaml(alerting.alert_rules(dev_plan)))
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
    config.write_text(obs.to_yaml(alerting.alertmanager_config(homelab_plan)))
    result = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _queries(plan: Plan) -> list[str]:
    rules = [r["expr"] for g in alerting.alert_rules(plan)["groups"] for r in g["rules"]]
    return dash.dashboard_queries(dash.dashboards(plan)) + rules


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
    for board in dash.dashboards(homelab_plan).values():
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


@pytest.mark.unit
def test_lokis_grpc_listens_on_loopback_only(homelab_plan: Plan) -> None:
    """Loki's gRPC port carries no TLS: it binds loopback and its ring advertises loopback,
    so nothing on the LAN can push to or query the ingester around the TLS HTTP port."""
    loki = obs.loki_config(homelab_plan)
    assert loki["server"]["grpc_listen_address"] == "127.0.0.1"
    assert loki["server"]["grpc_listen_port"] == obs.LOKI_GRPC_PORT
    assert loki["common"]["instance_addr"] == "127.0.0.1"
    assert "http_listen_address" not in loki["server"]  # the TLS HTTP port serves the fleet


def test_alert_rules_fire_on_the_conditions_they_name(homelab_plan: Plan, tmp_path: Path) -> None:
    """promtool's rule unit tests: a down target, 10% 5xx, and a 3 s p95 each raise their alert;
    a healthy service raises none."""
    rules = tmp_path / "alerts.yml"
    rules.write_text(obs.to_yaml(alerting.alert_rules(homelab_plan)))
    planned = alerting.planned_replicas(homelab_plan)
    assert set(planned) == set(obs.MORGAN_SERVICES)
    core = 'service="morgan-core"'
    disk = 'job="node",host="h1",instance="h1",mountpoint="/",fstype="ext4",device="sda1"'
    tmpfs = 'job="node",host="h1",instance="h1",mountpoint="/run",fstype="tmpfs",device="tmpfs"'
    ok = 'service="morgan-llm"'
    series = [
        {"series": f'up{{job="morgan",{core},host="h1",instance="core-h1"}}', "values": "0x20"},
        {"series": f'up{{job="morgan",{ok},host="h3",instance="llm-h3"}}', "values": "1x20"},
        # 100 requests a minute, 10 of them 5xx (10% > 5%); llm: no errors.
        {"series": f'{alerting.REQUESTS}{{{core},status="200"}}', "values": "0+90x20"},
        {"series": f'{alerting.REQUESTS}{{{core},status="500"}}', "values": "0+10x20"},
        {"series": f'{alerting.REQUESTS}{{{ok},status="200"}}', "values": "0+100x20"},
        # Every core request takes 2.5-5 s: p95 about 4.9 s > 2 s. llm answers in under 0.1 s.
        {"series": f'{alerting.DURATION}{{{core},le="2.5"}}', "values": "0x20"},
        {"series": f'{alerting.DURATION}{{{core},le="5"}}', "values": "0+100x20"},
        {"series": f'{alerting.DURATION}{{{core},le="+Inf"}}', "values": "0+100x20"},
        {"series": f'{alerting.DURATION}{{{ok},le="0.1"}}', "values": "0+100x20"},
        {"series": f'{alerting.DURATION}{{{ok},le="+Inf"}}', "values": "0+100x20"},
        # h2 stops answering; h1's root has 5 of 100 GB free, its tmpfs 1 of 100 (no disk).
        {"series": 'up{job="node",host="h2",instance="h2"}', "values": "0x20"},
        {"series": 'up{job="node",host="h1",instance="h1"}', "values": "1x20"},
        # df's view: 100 GB, 90 GB used, 5 GB kept for root, 5 GB available: 94.74% in use.
        {"series": f"node_filesystem_avail_bytes{{{disk}}}", "values": "5e9x20"},
        {"series": f"node_filesystem_free_bytes{{{disk}}}", "values": "10e9x20"},
        {"series": f"node_filesystem_size_bytes{{{disk}}}", "values": "100e9x20"},
        {"series": f"node_filesystem_avail_bytes{{{tmpfs}}}", "values": "1e9x20"},
        {"series": f"node_filesystem_free_bytes{{{tmpfs}}}", "values": "1e9x20"},
        {"series": f"node_filesystem_size_bytes{{{tmpfs}}}", "values": "100e9x20"},
        # PostgreSQL on h3 is down; the primary on h1 has one standby, 100 MB behind.
        {"series": 'pg_up{job="postgres",host="h3",instance="h3"}', "values": "0x20"},
        {"series": 'pg_up{job="postgres",host="h1",instance="h1"}', "values": "1x20"},
        {
            "series": "pg_stat_replication_pg_wal_lsn_diff"
            '{job="postgres",host="h1",application_name="h3",state="streaming"}',
            "values": "100e6x20",
        },
        # The Redis node on h4 answers, but sees the cluster failing.
        {"series": 'redis_up{job="redis",host="h4",instance="h4"}', "values": "1x20"},
        {"series": 'redis_cluster_state{job="redis",host="h4",instance="h4"}', "values": "0x20"},
    ]

    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "MorganServiceDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "job": "morgan",
                                    "service": "morgan-core",
                                    "host": "h1",
                                    "instance": "core-h1",
                                },
                                "exp_annotations": {
                                    "summary": "morgan-core on h1 is down",
                                    "description": "Prometheus cannot scrape core-h1 for 1m; check"
                                    " `morgan status` and `docker ps` on h1.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "MorganHighErrorRate",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "service": "morgan-core"},
                                "exp_annotations": {
                                    "summary": "morgan-core answers more than 5% of requests"
                                    " with 5xx",
                                    "description": "Error ratio 10%; `morgan logs` the service"
                                    " for the failing route.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "MorganHighLatencyP95",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "service": "morgan-core"},
                                "exp_annotations": {
                                    "summary": "morgan-core p95 latency above 2.0s",
                                    "description": "p95 is 4.875s; add a replica or check the"
                                    " GPU/CPU load of its hosts.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "MorganHostDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "job": "node",
                                    "host": "h2",
                                    "instance": "h2",
                                },
                                "exp_annotations": {
                                    "summary": "host h2 does not answer",
                                    "description": "node-exporter on h2 cannot be scraped for"
                                    " 1m: the machine is off, asleep or off the network; every"
                                    " service on it is down too.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "MorganDiskFilling",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "job": "node",
                                    "host": "h1",
                                    "instance": "h1",
                                    "mountpoint": "/",
                                    "fstype": "ext4",
                                    "device": "sda1",
                                },
                                "exp_annotations": {
                                    "summary": "/ on h1 is more than 90% full",
                                    "description": "94.74% in use; `docker system prune` old"
                                    " images"
                                    " on h1, or shorten metrics_retention/logs_retention.",
                                },
                            }
                        ],
                    },
                    *(
                        {
                            "eval_time": "20m",
                            "alertname": name,
                            "exp_alerts": [
                                {
                                    "exp_labels": labels,
                                    "exp_annotations": {
                                        "summary": summary,
                                        "description": description,
                                    },
                                }
                            ]
                            if labels
                            else [],
                        }
                        for name, labels, summary, description in [
                            (
                                "MorganPostgresDown",
                                {
                                    "severity": "critical",
                                    "job": "postgres",
                                    "host": "h3",
                                    "instance": "h3",
                                },
                                "PostgreSQL on h3 does not answer",
                                "Its exporter cannot log in for 1m; `morgan logs` the postgres"
                                " container on h3 (Patroni fails over to the standby).",
                            ),
                            (
                                "MorganPostgresReplicationLag",
                                {"severity": "warning", "host": "h1", "application_name": "h3"},
                                "standby h3 is more than 64 MiB behind",
                                "95.37MiB of WAL not yet replayed; check the standby's disk and"
                                " the network between the hosts.",
                            ),
                            ("MorganPostgresStandbyNotStreaming", None, "", ""),
                            ("MorganRedisDown", None, "", ""),
                            (
                                "MorganRedisClusterFailing",
                                {
                                    "severity": "critical",
                                    "job": "redis",
                                    "host": "h4",
                                    "instance": "h4",
                                },
                                "the Redis cluster seen from h4 is failing",
                                "Some hash slots have no live master; bring the node back, or"
                                " promote its replica with `redis-cli --cluster failover`.",
                            ),
                        ]
                    ),
                    {
                        # core's only series is down, llm's only one is up, stt and tts
                        # have none: each service below its planned count has its alert.
                        "eval_time": "15m",
                        "alertname": "MorganReplicasBelowPlan",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "service": service},
                                "exp_annotations": {
                                    "summary": f"{service}: fewer than the {count} planned"
                                    " replicas answer",
                                    "description": f"{int(service == 'morgan-llm')} of {count}"
                                    f" replicas of {service} answer; `morgan status` shows which"
                                    " is down.",
                                },
                            }
                            for service, count in sorted(planned.items())
                            if service != "morgan-llm" or count > 1
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = _run("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_web_config_serves_tls_per_promtool(homelab_plan: Plan, tmp_path: Path) -> None:
    from infra.model import TLS_DIR
    from tests.infra.test_gateway import _cert

    tls = _cert(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(obs.to_yaml(obs.web_config(homelab_plan)).replace(TLS_DIR, str(tls)))
    result = _run("check", "web-config", str(web))
    assert result.returncode == 0, result.stdout + result.stderr
