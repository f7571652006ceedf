"""Grafana dashboards as code: typed panels rendered to Grafana's JSON model.

Each panel says what it is drawn per (`per`): "host" panels must show every host that
runs node-exporter (or a Morgan service), "service" panels every deployed Morgan service;
the lab test evaluates every query on the live Prometheus and holds them to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from infra.configs.alerting import DURATION, REQUESTS, disk_used_ratio
from infra.placement import Plan

Per = Literal["host", "service", "event"]  # event: series only once something happened
WINDOW = "5m"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str
    per: Per


def _ratio_5xx() -> str:
    """5xx share per service, 0 (not "no data") for a service that had no 5xx."""
    total = f"sum by (service) (rate({REQUESTS}[{WINDOW}]))"
    errors = f'sum by (service) (rate({REQUESTS}{{status=~"5.."}}[{WINDOW}]))'
    return f"({errors} or {total} * 0) / {total}"


def _quantile(q: float) -> str:
    return f"histogram_quantile({q}, sum by (service, le) (rate({DURATION}[{WINDOW}])))"


def host_panels() -> list[Panel]:
    return [
        Panel("Hosts up", (('up{job="node"}', "{{host}}"),), "short", "host"),
        Panel(
            "CPU busy",
            (
                (
                    "1 - avg by (host)"
                    f' (rate(node_cpu_seconds_total{{job="node",mode="idle"}}[{WINDOW}]))',
                    "{{host}}",
                ),
            ),
            "percentunit",
            "host",
        ),
        Panel(
            "Memory in use",
            (
                (
                    '1 - node_memory_MemAvailable_bytes{job="node"}'
                    ' / node_memory_MemTotal_bytes{job="node"}',
                    "{{host}}",
                ),
            ),
            "percentunit",
            "host",
        ),
        Panel(
            "Fullest disk",
            ((f"max by (host) ({disk_used_ratio()})", "{{host}}"),),
            "percentunit",
            "host",
        ),
    ]


def overview_panels(plan: Plan) -> list[Panel]:
    panels = [
        Panel(
            "Service instances up",
            (('sum by (service) (up{job="morgan"})', "{{service}}"),),
            "short",
            "service",
        ),
        Panel(
            "Requests per second",
            ((f"sum by (service) (rate({REQUESTS}[{WINDOW}]))", "{{service}}"),),
            "reqps",
            "service",
        ),
        Panel("p95 latency", ((_quantile(0.95), "{{service}}"),), "s", "service"),
        Panel("5xx ratio", ((_ratio_5xx(), "{{service}}"),), "percentunit", "service"),
        Panel(
            "Instances per host",
            (('count by (host) (up{job="morgan"} == 1)', "{{host}}"),),
            "short",
            "host",
        ),
        Panel(
            "In-flight requests",
            (("sum by (service) (morgan_http_requests_in_flight)", "{{service}}"),),
            "short",
            "service",
        ),
    ]
    if plan.of_role("node-exporter"):
        panels += host_panels()
    return panels


def services_panels() -> list[Panel]:
    return [
        Panel(
            "Requests by route",
            (
                (
                    f"sum by (service, route) (rate({REQUESTS}[{WINDOW}]))",
                    "{{service}} {{route}}",
                ),
            ),
            "reqps",
            "service",
        ),
        Panel(
            "p50 / p95 / p99 by service",
            tuple((_quantile(q), f"p{int(q * 100)} {{{{service}}}}") for q in (0.5, 0.95, 0.99)),
            "s",
            "service",
        ),
        Panel(
            "Upstream retries",
            (
                (
                    f"sum by (target, reason) (rate(morgan_upstream_retries_total[{WINDOW}]))",
                    "{{target}} {{reason}}",
                ),
            ),
            "ops",
            "event",
        ),
        Panel(
            "Rejected config updates",
            (("sum by (service) (increase(morgan_config_rejected_total[1h]))", "{{service}}"),),
            "short",
            "event",
        ),
    ]


def boards(plan: Plan) -> dict[str, tuple[str, str, list[Panel]]]:
    """Dashboard file name → (uid, title, panels)."""
    return {
        "morgan-overview.json": ("morgan-overview", "Morgan overview", overview_panels(plan)),
        "morgan-services.json": ("morgan-services", "Morgan services", services_panels()),
    }


def _panel_json(pid: int, panel: Panel) -> dict[str, Any]:
    # Two panels a row, 12 columns wide and 8 high each.
    x, y = 12 * ((pid - 1) % 2), 8 * ((pid - 1) // 2)
    return {
        "id": pid,
        "title": panel.title,
        "type": "timeseries",
        "datasource": {"type": "prometheus", "uid": "prometheus"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(panel.queries)
        ],
    }


def dashboards(plan: Plan) -> dict[str, dict[str, Any]]:
    """Dashboard file name → Grafana dashboard JSON model."""
    return {
        name: {
            "uid": uid,
            "title": title,
            "tags": ["morgan"],
            "timezone": "browser",
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "panels": [_panel_json(i, p) for i, p in enumerate(panels, start=1)],
        }
        for name, (uid, title, panels) in boards(plan).items()
    }


def dashboard_queries(boards_json: dict[str, dict[str, Any]]) -> list[str]:
    return [t["expr"] for b in boards_json.values() for p in b["panels"] for t in p["targets"]]
