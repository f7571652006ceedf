"""Grafana dashboards as code: typed panels rendered to Grafana's JSON model.

Each panel says what it is drawn per (`per`): "host" panels must show every host that
runs node-exporter (or a Morgan service), "service" panels every deployed Morgan service,
"core" core, "model" the model services, "audio" stt and tts, "gpu" every host with a
GPU (DCGM exporter), "postgres" and "redis" every host with that server (its exporter
beside it); `expected_series` says which label
carries them. The lab test evaluates every query on the live Prometheus and holds each
panel to it. "event" panels show series only once something happened (a retry, a 429).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from infra.config import SERVICE_NAMES
from infra.configs.alerting import CERT_EXPIRY, DURATION, REQUESTS, disk_used_ratio
from infra.placement import Plan

Per = Literal["host", "service", "core", "model", "audio", "gpu", "postgres", "redis", "event"]
WINDOW = "5m"
MODEL_SERVICES = ("morgan-llm", "morgan-stt", "morgan-tts", "morgan-vad")


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
    if plan.of_role("dcgm-exporter"):
        panels.append(
            Panel(
                "GPU busy",
                (('avg by (host) (DCGM_FI_DEV_GPU_UTIL{job="gpu"}) / 100', "{{host}}"),),
                "percentunit",
                "gpu",
            )
        )
    return panels


def services_panels(plan: Plan) -> list[Panel]:
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
    ] + (tls_panels() if plan.config.security.internal_tls else [])


def tls_panels() -> list[Panel]:
    """Days until each service's certificate and its CA end (alert: 21 days)."""
    days = f"(min by (service, kind) ({CERT_EXPIRY}) - time()) / 86400"
    return [Panel("TLS certificate days left", ((days, "{{service}} {{kind}}"),), "d", "service")]


def core_panels() -> list[Panel]:
    turns = "morgan_core_turns_total"
    cache = "morgan_core_cache_requests_total"
    hits = f'sum by (service) (rate({cache}{{result="hit"}}[{WINDOW}]))'
    lookups = f"sum by (service) (rate({cache}[{WINDOW}]))"
    stage = (
        f"histogram_quantile(0.95, sum by (service, stage, le)"
        f" (rate(morgan_core_stage_seconds_bucket[{WINDOW}])))"
    )
    return [
        Panel(
            "Turns per second by source",
            ((f"sum by (service, source) (rate({turns}[{WINDOW}]))", "{{source}}"),),
            "ops",
            "core",
        ),
        Panel(
            "Conversations started per second",
            (
                (
                    f"sum by (service) (rate(morgan_core_conversations_started_total[{WINDOW}]))",
                    "{{service}}",
                ),
            ),
            "ops",
            "core",
        ),
        Panel("p95 of each stage of a turn", ((stage, "{{stage}}"),), "s", "core"),
        Panel(
            "Turns refused (503, all turn slots busy)",
            ((f"sum by (service) (rate(morgan_core_turns_rejected_total[{WINDOW}]))", "refused"),),
            "ops",
            "core",
        ),
        Panel(
            "Context cache hit ratio",
            ((f"({hits} or {lookups} * 0) / {lookups}", "{{service}}"),),
            "percentunit",
            "core",
        ),
        Panel(
            "Rate-limited (429) by budget",
            ((f"sum by (bucket) (rate(morgan_core_rate_limited_total[{WINDOW}]))", "{{bucket}}"),),
            "ops",
            "event",
        ),
    ]


def model_panels() -> list[Panel]:
    rtf = (
        "histogram_quantile(0.5, sum by (service, le)"
        f" (rate(morgan_audio_real_time_factor_bucket[{WINDOW}])))"
    )
    return [
        Panel(
            "Model in memory",
            (("max by (service) (morgan_model_loaded)", "{{service}}"),),
            "short",
            "model",
        ),
        Panel(
            "Requests holding a model slot",
            (("sum by (service) (morgan_model_requests_running)", "{{service}}"),),
            "short",
            "model",
        ),
        Panel(
            "Queue depth",
            (("sum by (service) (morgan_model_queue_depth)", "{{service}}"),),
            "short",
            "model",
        ),
        Panel(
            "Real-time factor (p50; below 1 is faster than real time)",
            ((rtf, "{{service}}"),),
            "short",
            "audio",
        ),
        Panel(
            "GPU utilisation",
            (('avg by (host) (DCGM_FI_DEV_GPU_UTIL{job="gpu"})', "{{host}}"),),
            "percent",
            "gpu",
        ),
        Panel(
            "GPU memory used",
            # DCGM reports frame-buffer MiB.
            (('sum by (host) (DCGM_FI_DEV_FB_USED{job="gpu"}) * 1048576', "{{host}}"),),
            "bytes",
            "gpu",
        ),
        Panel(
            "Refused (queue full) and dropped (caller left)",
            (
                (
                    f"sum by (service) (rate(morgan_model_requests_rejected_total[{WINDOW}]))",
                    "{{service}} refused",
                ),
                (
                    f"sum by (service) (rate(morgan_model_requests_abandoned_total[{WINDOW}]))",
                    "{{service}} dropped",
                ),
            ),
            "ops",
            "event",
        ),
        Panel(
            "LLM tokens per second (p50)",
            (
                (
                    "histogram_quantile(0.5, sum by (model, le)"
                    f" (rate(morgan_llm_tokens_per_second_bucket[{WINDOW}])))",
                    "{{model}}",
                ),
            ),
            "short",
            "event",
        ),
    ]


def database_panels() -> list[Panel]:
    redis_hits = f'rate(redis_keyspace_hits_total{{job="redis"}}[{WINDOW}])'
    redis_misses = f'rate(redis_keyspace_misses_total{{job="redis"}}[{WINDOW}])'
    return [
        Panel(
            "PostgreSQL up",
            (('max by (host) (pg_up{job="postgres"})', "{{host}}"),),
            "short",
            "postgres",
        ),
        Panel(
            "PostgreSQL role (1 = standby)",
            (('max by (host) (pg_settings_in_hot_standby{job="postgres"})', "{{host}}"),),
            "short",
            "postgres",
        ),
        Panel(
            "PostgreSQL connections",
            (('sum by (host) (pg_stat_database_numbackends{job="postgres"})', "{{host}}"),),
            "short",
            "postgres",
        ),
        Panel(
            "Replication lag (bytes of WAL behind)",
            (
                (
                    "max by (host, application_name) (pg_stat_replication_pg_wal_lsn_diff"
                    '{job="postgres"})',
                    "{{host}} → {{application_name}}",
                ),
            ),
            "bytes",
            "event",
        ),
        Panel(
            "Redis up", (('max by (host) (redis_up{job="redis"})', "{{host}}"),), "short", "redis"
        ),
        Panel(
            "Redis cluster state (1 = ok)",
            (('min by (host) (redis_cluster_state{job="redis"})', "{{host}}"),),
            "short",
            "redis",
        ),
        Panel(
            "Redis memory used",
            (('sum by (host) (redis_memory_used_bytes{job="redis"})', "{{host}}"),),
            "bytes",
            "redis",
        ),
        Panel(
            "Redis hit ratio",
            (
                (
                    f"sum by (host) ({redis_hits}) / sum by (host) ({redis_hits} + {redis_misses})",
                    "{{host}}",
                ),
            ),
            "percentunit",
            "redis",
        ),
    ]


def boards(plan: Plan) -> dict[str, tuple[str, str, list[Panel]]]:
    """Dashboard file name → (uid, title, panels)."""
    found = {
        "morgan-overview.json": ("morgan-overview", "Morgan overview", overview_panels(plan)),
        "morgan-services.json": ("morgan-services", "Morgan services", services_panels(plan)),
        "morgan-core.json": ("morgan-core", "Morgan core", core_panels()),
        "morgan-models.json": ("morgan-models", "Morgan model services", model_panels()),
    }
    if plan.of_role("postgres-exporter") or plan.of_role("redis-exporter"):
        found["morgan-databases.json"] = (
            "morgan-databases", "Morgan databases", database_panels()
        )  # fmt: skip
    return found


def expected_series(plan: Plan, per: Per) -> tuple[str, set[str]]:
    """The label a panel drawn `per` shows its series by, and the values it must show."""
    services = {f"morgan-{r.role}" for r in plan.replicas if r.role in SERVICE_NAMES}
    table: dict[Per, tuple[str, set[str]]] = {
        "host": ("host", {h.name for h in plan.hosts}),
        "service": ("service", services),
        "core": ("service", services & {"morgan-core"}),
        "model": ("service", services & set(MODEL_SERVICES)),
        "audio": ("service", services & {"morgan-stt", "morgan-tts"}),
        "gpu": ("host", set(plan.hosts_of("dcgm-exporter"))),
        "postgres": ("host", set(plan.hosts_of("postgres-exporter"))),
        "redis": ("host", set(plan.hosts_of("redis-exporter"))),
        "event": ("service", set()),
    }
    return table[per]


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
