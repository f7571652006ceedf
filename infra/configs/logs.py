"""Log alerts (Loki's ruler) and the saved LogQL queries of the troubleshooting guide.

Every Morgan log line is one JSON object (morgan.shared.logging): time, level, service,
host, request_id, user_id, logger, message, and the record's extras (the access log adds
method, route, path, status and duration_ms; an exception adds `exception`). Promtail
ships each with the labels job, container, role, stream, level, service and host
(infra.configs.observability.promtail_config); a query selects streams by those labels
and reads the rest with `| json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.placement import Plan

# The Morgan services' streams, and their access log.
MORGAN_STREAMS = '{job="containers", role=~"core|llm|stt|tts"}'
ACCESS = f'{MORGAN_STREAMS} | json | logger="morgan.access"'
WINDOW = "5m"
# Where Loki's ruler reads rules: one directory per tenant ("fake" without auth).
RULES_DIR = "/etc/loki/rules"
RULES_FILE = f"{RULES_DIR}/fake/morgan.yml"


@dataclass(frozen=True)
class SavedQuery:
    name: str
    logql: str
    finds: str


SAVED_QUERIES: tuple[SavedQuery, ...] = (
    SavedQuery(
        "errors",
        '{job="containers", level=~"ERROR|CRITICAL"}',
        "every error line of every Morgan container",
    ),
    SavedQuery("5xx", f"{ACCESS} | status >= 500", "requests a service answered 5xx"),
    SavedQuery(
        "auth-failures",
        f"{ACCESS} | status == 401",
        "requests refused for a missing or bad API key (a client with an old key, or"
        " someone guessing)",
    ),
    SavedQuery(
        "rate-limited", f"{ACCESS} | status == 429", "requests refused by a rate or auth limit"
    ),
    SavedQuery(
        "tracebacks",
        f'{MORGAN_STREAMS} | json | exception != ""',
        "lines that carry a Python traceback (field `exception`)",
    ),
    SavedQuery(
        "one-request",
        f'{MORGAN_STREAMS} | json | request_id="REQUEST_ID"',
        "every line of one request, across core and the model services (the id is in the"
        " reply's X-Request-ID and in every error body)",
    ),
    SavedQuery(
        "one-user",
        f'{MORGAN_STREAMS} | json | user_id="USER_ID"',
        "what one owner's requests did",
    ),
    SavedQuery("slow", f"{ACCESS} | duration_ms > 2000", "requests that took over 2 s"),
    SavedQuery(
        "consul-registration",
        f'{MORGAN_STREAMS} | json | logger="morgan.shared.registry"',
        "each instance registering in Consul, or finding itself missing there",
    ),
)


@dataclass(frozen=True)
class LogAlert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str


def log_alerts() -> tuple[LogAlert, ...]:
    per = "sum by (service, host)"
    return (
        LogAlert(
            "MorganLog5xxBurst",
            f"{per} (count_over_time({ACCESS} | status >= 500 [{WINDOW}])) > 10",
            "0m",
            "warning",
            "{{ $labels.service }} on {{ $labels.host }} answered over 10 requests 5xx in 5"
            ' minutes; the saved query "5xx" shows which',
        ),
        LogAlert(
            "MorganLogAuthFailures",
            f"sum by (service) (count_over_time({ACCESS} | status == 401 [{WINDOW}])) > 30",
            "0m",
            "warning",
            "{{ $labels.service }} refused over 30 requests for their API key in 5 minutes:"
            ' a client with a revoked key, or someone guessing ("auth-failures")',
        ),
        LogAlert(
            "MorganLogTracebacks",
            f'{per} (count_over_time({MORGAN_STREAMS} | json | exception != "" [{WINDOW}])) > 0',
            "0m",
            "warning",
            "{{ $labels.service }} on {{ $labels.host }} logged a traceback"
            ' ("tracebacks" shows it)',
        ),
    )


def loki_rules() -> dict[str, Any]:
    """The ruler's rule file (Prometheus' rule format, LogQL expressions)."""
    return {
        "groups": [
            {
                "name": "morgan-logs",
                "rules": [
                    {
                        "alert": a.name,
                        "expr": a.expr,
                        "for": a.for_,
                        "labels": {"severity": a.severity},
                        "annotations": {"summary": a.summary},
                    }
                    for a in log_alerts()
                ],
            }
        ]
    }


def ruler_config(plan: Plan, alertmanager_url: str | None) -> dict[str, Any]:
    """Loki's `ruler`: the rules above, evaluated every minute, sent to Alertmanager with
    the monitoring password (expanded from the environment: -config.expand-env)."""
    from infra.configs import monitoring_auth
    from infra.model import TLS_DIR

    ruler: dict[str, Any] = {
        "storage": {"type": "local", "local": {"directory": RULES_DIR}},
        "rule_path": "/loki/rules-temp",
        "evaluation_interval": "1m",
        "enable_api": True,
    }
    if alertmanager_url is not None:
        client: dict[str, Any] = {
            "basic_auth_username": monitoring_auth.MONITORING_USER,
            "basic_auth_password": f"${{{monitoring_auth.PASSWORD_VARIABLE}}}",
        }
        if plan.config.security.internal_tls:
            client["tls_ca_path"] = f"{TLS_DIR}/ca.pem"
        ruler.update({"alertmanager_url": alertmanager_url, "alertmanager_client": client})
    return ruler
