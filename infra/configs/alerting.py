"""Alert rules (Prometheus), Alertmanager's routes and receivers, and amtool's config.

Receivers come from the stack file's `observability.alerting`; their secrets reach the
container as files, Alertmanager's user's alone where the plan knows it (Alertmanager
reads `api_url_file` and `auth_password_file`), never in its environment or data volume.
"""

from __future__ import annotations

from typing import Any

from infra.alerting_config import AlertReceiver
from infra.config import SERVICE_NAMES
from infra.configs import monitoring_auth
from infra.model import SecretFile
from infra.placement import Plan

REQUESTS = "morgan_http_requests_total"
DURATION = "morgan_http_request_duration_seconds_bucket"
CERT_EXPIRY = "morgan_tls_certificate_expiry_timestamp_seconds"
# A deploy renews every certificate that ends within 30 days (infra.components.pki
# RENEW_HOURS): a fleet deployed at least monthly never sees this alert; one left alone
# for eleven months does, three weeks before its certificates end.
CERT_EXPIRY_WARN_DAYS = 21
ALERTMANAGER_PORT = 9093
# Stack secret → the file Alertmanager reads it from.
SECRET_FILES: dict[str, SecretFile] = {
    name: SecretFile(name.upper(), name) for name in ("alert_slack_url", "alert_smtp_password")
}
# Where amtool looks for its defaults: Debian's build, and upstream's (the prom image).
AMTOOL_CONFIGS = ("/etc/prometheus/amtool.yml", "/etc/amtool/config.yml")
AMTOOL_HTTP_CONFIG = "/etc/prometheus/amtool-http.yml"
SUMMARY = '{{ .CommonAnnotations.summary }}{{ if eq .Status "resolved" }} (resolved){{ end }}'


def _rule(
    alert: str, expr: str, for_: str, severity: str, summary: str, description: str
) -> dict[str, Any]:
    return {
        "alert": alert,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description},
    }


def planned_replicas(plan: Plan) -> dict[str, int]:
    """Consul service name → the replicas the plan runs of it."""
    out: dict[str, int] = {}
    for replica in plan.replicas:
        if replica.role in SERVICE_NAMES:
            name = f"morgan-{replica.role}"
            out[name] = out.get(name, 0) + 1
    return out


def alert_rules(plan: Plan) -> dict[str, Any]:
    obs = plan.config.observability
    down_for = obs.alerting.service_down_for
    rules = [
        _rule(
            "MorganServiceDown",
            'up{job="morgan"} == 0',
            down_for,
            "critical",
            "{{ $labels.service }} on {{ $labels.host }} is down",
            f"Prometheus cannot scrape {{{{ $labels.instance }}}} for {down_for}; check"
            " `morgan status` and `docker ps` on {{ $labels.host }}.",
        ),
        _rule(
            "MorganHighErrorRate",
            f'sum by (service) (rate({REQUESTS}{{status=~"5.."}}[5m]))'
            f" / sum by (service) (rate({REQUESTS}[5m])) > {obs.error_rate_threshold}",
            "5m",
            "warning",
            "{{ $labels.service }} answers more than"
            f" {obs.error_rate_threshold:.0%} of requests with 5xx",
            "Error ratio {{ $value | humanizePercentage }}; `morgan logs` the service for the"
            " failing route.",
        ),
        _rule(
            "MorganHighLatencyP95",
            "histogram_quantile(0.95, sum by (service, le)"
            f" (rate({DURATION}[5m]))) > {obs.p95_latency_seconds}",
            "10m",
            "warning",
            f"{{{{ $labels.service }}}} p95 latency above {obs.p95_latency_seconds}s",
            "p95 is {{ $value | humanizeDuration }}; add a replica or check the GPU/CPU load"
            " of its hosts.",
        ),
    ]
    if plan.config.security.internal_tls:
        rules.append(certificate_rule())
    if plan.of_role("node-exporter"):
        rules += host_rules(plan)
    if plan.of_role("postgres-exporter"):
        rules += postgres_rules(plan)
    if plan.of_role("redis-exporter"):
        rules += redis_rules(plan)
    # One rule per service: fewer replicas answer than the plan runs (a stopped one that
    # Prometheus no longer lists counts as missing too).
    for service, count in sorted(planned_replicas(plan).items()):
        up = f'up{{job="morgan", service="{service}"}}'
        rules.append(
            _rule(
                "MorganReplicasBelowPlan",
                f"(sum({up}) or vector(0)) < {count}",
                down_for,
                "warning",
                f"{service}: fewer than the {count} planned replicas answer",
                "{{ $value }} of "
                f"{count} replicas of {service} answer; `morgan status` shows which is down.",
            )
            | {"labels": {"severity": "warning", "service": service}}
        )
    return {"groups": [{"name": "morgan", "rules": rules}]}


def certificate_rule() -> dict[str, Any]:
    """A service's certificate, or the CA that signed it, ends within three weeks."""
    return _rule(
        "MorganCertificateExpiring",
        f"min by (service, host, kind) ({CERT_EXPIRY}) - time() < {CERT_EXPIRY_WARN_DAYS} * 86400",
        "1h",
        "warning",
        "the TLS {{ $labels.kind }} of {{ $labels.service }} on {{ $labels.host }} ends"
        f" within {CERT_EXPIRY_WARN_DAYS} days",
        "It ends in {{ $value | humanizeDuration }}. `pulumi up` (or `morgan deploy`)"
        " renews every certificate that ends within 30 days, and the CA with them; run it"
        " (docs/operations.md, rotate certificates and secrets).",
    )


# Filesystems that are not disks: left out of the disk alert.
NOT_DISKS = 'fstype!~"tmpfs|overlay|squashfs|ramfs|nsfs|fuse.*"'
DISK_FREE_RATIO = 0.10


def disk_used_ratio() -> str:
    """Per disk, the share in use as `df` counts it: used / (used + available to users)."""
    labels = f'job="node",{NOT_DISKS}'
    used = f"(node_filesystem_size_bytes{{{labels}}} - node_filesystem_free_bytes{{{labels}}})"
    return f"{used} / ({used} + node_filesystem_avail_bytes{{{labels}}})"


def host_rules(plan: Plan) -> list[dict[str, Any]]:
    """From node-exporter: a host that stops answering, a disk that fills."""
    down_for = plan.config.observability.alerting.service_down_for
    return [
        _rule(
            "MorganHostDown",
            'up{job="node"} == 0',
            down_for,
            "critical",
            "host {{ $labels.host }} does not answer",
            f"node-exporter on {{{{ $labels.host }}}} cannot be scraped for {down_for}: the"
            " machine is off, asleep or off the network; every service on it is down too.",
        ),
        _rule(
            "MorganDiskFilling",
            f"{disk_used_ratio()} > {1 - DISK_FREE_RATIO}",
            "15m",
            "warning",
            "{{ $labels.mountpoint }} on {{ $labels.host }} is"
            f" more than {1 - DISK_FREE_RATIO:.0%} full",
            "{{ $value | humanizePercentage }} in use; `docker system prune` old images on"
            " {{ $labels.host }}, or shorten metrics_retention/logs_retention.",
        ),
    ]


REPLICATION_LAG_BYTES = 64 * 1024 * 1024


def postgres_rules(plan: Plan) -> list[dict[str, Any]]:
    """From the PostgreSQL exporters: a server that stops answering, a standby that falls
    behind or stops streaming (read on the primary, which lists its standbys)."""
    down_for = plan.config.observability.alerting.service_down_for
    rules = [
        _rule(
            "MorganPostgresDown",
            'pg_up{job="postgres"} == 0',
            down_for,
            "critical",
            "PostgreSQL on {{ $labels.host }} does not answer",
            "Its exporter cannot log in for " + down_for + "; `morgan logs` the postgres"
            " container on {{ $labels.host }} (Patroni fails over to the standby).",
        ),
        _rule(
            "MorganPostgresReplicationLag",
            "max by (host, application_name)"
            f' (pg_stat_replication_pg_wal_lsn_diff{{job="postgres"}}) > {REPLICATION_LAG_BYTES}',
            "5m",
            "warning",
            "standby {{ $labels.application_name }} is more than 64 MiB behind",
            "{{ $value | humanize1024 }}B of WAL not yet replayed; check the standby's disk"
            " and the network between the hosts.",
        ),
    ]
    if plan.of_role("postgres-standby"):
        streaming = 'pg_stat_replication_pg_wal_lsn_diff{job="postgres",state="streaming"}'
        rules.append(
            _rule(
                "MorganPostgresStandbyNotStreaming",
                f"(count({streaming}) or vector(0)) < 1",
                down_for,
                "warning",
                "no standby streams from the PostgreSQL primary",
                "A failover now would lose the last commits; `morgan status` shows the"
                " standby's container, its logs why it stopped.",
            )
        )
    return rules


def redis_rules(plan: Plan) -> list[dict[str, Any]]:
    down_for = plan.config.observability.alerting.service_down_for
    rules = [
        _rule(
            "MorganRedisDown",
            'redis_up{job="redis"} == 0',
            down_for,
            "critical",
            "Redis on {{ $labels.host }} does not answer",
            "Its exporter cannot reach the node for " + down_for + "; core serves without"
            " its cache meanwhile.",
        )
    ]
    if plan.config.redis.mode == "cluster":
        rules.append(
            _rule(
                "MorganRedisClusterFailing",
                'redis_cluster_state{job="redis"} == 0',
                down_for,
                "critical",
                "the Redis cluster seen from {{ $labels.host }} is failing",
                "Some hash slots have no live master; bring the node back, or promote its"
                " replica with `redis-cli --cluster failover`.",
            )
        )
    return rules


def _receiver(plan: Plan, receiver: AlertReceiver) -> dict[str, Any]:
    out: dict[str, Any] = {"name": receiver.name}
    if receiver.webhook:
        out["webhook_configs"] = [{"url": receiver.webhook.url, "send_resolved": True}]
    if receiver.slack:
        out["slack_configs"] = [
            {
                "api_url_file": SECRET_FILES["alert_slack_url"].path,
                "channel": receiver.slack.channel,
                "title": SUMMARY,
                "text": "{{ range .Alerts }}{{ .Annotations.description }}\n{{ end }}",
                "send_resolved": True,
            }
        ]
    if receiver.email:
        email: dict[str, Any] = {
            "to": receiver.email.to,
            "from": receiver.email.sender,
            "smarthost": receiver.email.smarthost,
            "require_tls": receiver.email.require_tls,
            "headers": {"Subject": f"[Morgan {plan.config.stack}] {SUMMARY}"},
            "send_resolved": True,
        }
        if receiver.email.username:
            email["auth_username"] = receiver.email.username
            email["auth_password_file"] = SECRET_FILES["alert_smtp_password"].path
        out["email_configs"] = [email]
    return out


def alertmanager_config(plan: Plan) -> dict[str, Any]:
    """Every alert reaches each receiver whose severities include its own; `default`
    (no integration) only keeps them for the UI and amtool."""
    alerting = plan.config.observability.alerting
    routes = [
        {
            "receiver": r.name,
            "matchers": [f'severity=~"{"|".join(r.severities)}"'],
            "continue": True,
        }
        for r in alerting.receivers
    ]
    route: dict[str, Any] = {
        "receiver": "default",
        "group_by": ["alertname", "service"],
        "group_wait": alerting.group_wait,
        "group_interval": alerting.group_interval,
        "repeat_interval": alerting.repeat_interval,
    }
    if routes:
        route["routes"] = routes
    return {
        "route": route,
        "receivers": [{"name": "default"}, *(_receiver(plan, r) for r in alerting.receivers)],
        # A service that is down also errs and is slow: only the down alert is news.
        "inhibit_rules": [
            {
                "source_matchers": ["alertname=MorganServiceDown"],
                "target_matchers": ["severity=warning"],
                "equal": ["service"],
            },
            # A host that is down takes its services with it: one notice, the host's.
            {
                "source_matchers": ["alertname=MorganHostDown"],
                "target_matchers": ['alertname=~"MorganServiceDown|MorganDiskFilling"'],
                "equal": ["host"],
            },
        ],
    }


def alertmanager_secret_files(plan: Plan) -> tuple[SecretFile, ...]:
    """The monitoring password and its hash, and the receivers' secrets the stack uses."""
    receivers = tuple(SECRET_FILES[n] for n in plan.config.observability.alerting.secrets())
    return (*monitoring_auth.secret_files(), *receivers)


def amtool_config(plan: Plan, listen: str) -> dict[str, str]:
    """`amtool` inside the container talks to this Alertmanager without flags."""
    tls = plan.config.security.internal_tls
    scheme = "https" if tls else "http"
    # Its certificate names the host's address and 127.0.0.1, not a wildcard address.
    host = "127.0.0.1" if listen in ("0.0.0.0", "::") else listen
    return {
        "alertmanager.url": f"{scheme}://{host}:{ALERTMANAGER_PORT}",
        "http.config.file": AMTOOL_HTTP_CONFIG,
    }
