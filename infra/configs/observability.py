"""Prometheus (consul_sd or static targets), Grafana provisioning, Loki, Promtail; alerting
is in infra.configs.alerting, the dashboards in infra.configs.dashboards."""

from __future__ import annotations

import json
from typing import Any

import yaml
from morgan.catalog import consul_name

from infra.config import SERVICE_NAMES
from infra.configs import logs as logs_cfg
from infra.configs import monitoring_auth
from infra.configs.consul import AGENT_PORTS
from infra.model import TLS_DIR
from infra.placement import Plan

MORGAN_SERVICES = tuple(consul_name(s) for s in SERVICE_NAMES)
PORTS = {
    "prometheus": 9090,
    "alertmanager": 9093,
    "grafana": 3000,
    "loki": 3100,
    "promtail": 9080,
    "node-exporter": 9100,
    "postgres-exporter": 9187,
    "redis-exporter": 9121,
    "dcgm-exporter": 9400,
}
HOST_ROOT = "/host"  # where node-exporter sees the host's root, read-only
# Roles with one container on every host (the others run on the observability host).
PER_HOST = ("promtail", "node-exporter", "postgres-exporter", "redis-exporter", "dcgm-exporter")
# Exporter role -> its Prometheus job.
EXPORTER_JOBS = {
    "node-exporter": "node",
    "postgres-exporter": "postgres",
    "redis-exporter": "redis",
    "dcgm-exporter": "gpu",
}
LOKI_GRPC_PORT = 9095


def _consul_sd(plan: Plan, services: list[str]) -> dict[str, Any]:
    tls = plan.config.security.internal_tls
    sd: dict[str, Any] = {
        "server": f"127.0.0.1:{AGENT_PORTS['https'] if tls else AGENT_PORTS['http']}",
        "services": services,
    }
    if tls:
        sd["scheme"] = "https"
        sd["tls_config"] = {"ca_file": f"{TLS_DIR}/ca.pem"}
    return sd


def _scheme(plan: Plan) -> dict[str, Any]:
    if not plan.config.security.internal_tls:
        return {"scheme": "http"}
    return {
        "scheme": "https",
        "tls_config": {
            "ca_file": f"{TLS_DIR}/ca.pem",
            "cert_file": f"{TLS_DIR}/cert.pem",
            "key_file": f"{TLS_DIR}/key.pem",
            "insecure_skip_verify": False,
        },
    }


def _static_targets(plan: Plan, services: tuple[str, ...]) -> list[dict[str, Any]]:
    """The plan's replicas of `services` as static targets, labelled as Consul's would be."""
    from infra.spec_common import service_port

    out = []
    for replica in plan.replicas:
        name = f"morgan-{replica.role}"
        if name not in services:
            continue
        target = f"{plan.config.host(replica.host).address}:{service_port(plan, replica)}"
        labels = {"service": name, "host": replica.host, "instance": f"{name}-{replica.host}"}
        out.append({"targets": [target], "labels": labels})
    return out


def _exporter_jobs(plan: Plan, static: bool) -> list[dict[str, Any]]:
    return [
        job
        for role, name in EXPORTER_JOBS.items()
        for job in _exporter_job(plan, static, role, name)
    ]


def _exporter_job(plan: Plan, static: bool, role: str, name: str) -> list[dict[str, Any]]:
    """An exporter on each of its hosts, labelled by host as the Morgan services are."""
    hosts = plan.hosts_of(role)
    if not hosts:
        return []
    port = PORTS[role]
    found: dict[str, Any] = (
        {
            "static_configs": [
                {
                    "targets": [f"{plan.config.host(h).address}:{port}"],
                    "labels": {"host": h, "instance": h},
                }
                for h in hosts
            ]
        }
        if static
        else {
            "consul_sd_configs": [_consul_sd(plan, [role])],
            "relabel_configs": [
                {"source_labels": ["__meta_consul_node"], "target_label": "host"},
                {"source_labels": ["__meta_consul_node"], "target_label": "instance"},
            ],
        }
    )
    return [{"job_name": name, **found, **_scheme(plan)}]


def prometheus_config(plan: Plan) -> dict[str, Any]:
    static = plan.config.observability.discovery == "static"
    interval = plan.config.observability.scrape_interval
    relabel = [
        {"source_labels": ["__meta_consul_service"], "target_label": "service"},
        {"source_labels": ["__meta_consul_node"], "target_label": "host"},
        {"source_labels": ["__meta_consul_service_id"], "target_label": "instance"},
    ]
    document: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": ["/etc/prometheus/alerts.yml"],
        "scrape_configs": [
            {
                "job_name": "morgan",
                "metrics_path": "/metrics",
                **(
                    {"static_configs": _static_targets(plan, MORGAN_SERVICES)}
                    if static
                    else {
                        "consul_sd_configs": [_consul_sd(plan, list(MORGAN_SERVICES))],
                        "relabel_configs": relabel,
                    }
                ),
                **_scheme(plan),
            },
            *_exporter_jobs(plan, static),
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"127.0.0.1:{PORTS['prometheus']}"]}],
                "basic_auth": monitoring_auth.basic_auth(),
                **_scheme(plan),
            },
        ],
    }
    alertmanagers = [
        f"{plan.config.host(h).address}:{PORTS['alertmanager']}"
        for h in plan.hosts_of("alertmanager")
    ]
    if alertmanagers:
        found: dict[str, Any] = (
            {"static_configs": [{"targets": alertmanagers}]}
            if static
            else {"consul_sd_configs": [_consul_sd(plan, ["alertmanager"])]}
        )
        document["alerting"] = {
            "alertmanagers": [
                {**found, "basic_auth": monitoring_auth.basic_auth(), **_scheme(plan)}
            ]
        }
    return document


def web_config(plan: Plan) -> dict[str, Any]:
    """An exporter-toolkit web config's TLS part: serve HTTPS with the role's cert (for
    Prometheus and Alertmanager, the start line appends the basic-auth user)."""
    if not plan.config.security.internal_tls:
        return {}
    return {
        "tls_server_config": {
            "cert_file": f"{TLS_DIR}/cert.pem",
            "key_file": f"{TLS_DIR}/key.pem",
        }
    }


def grafana_datasources(plan: Plan) -> dict[str, Any]:
    scheme = "https" if plan.config.security.internal_tls else "http"
    json_data: dict[str, Any] = {"tlsAuthWithCACert": True} if scheme == "https" else {}
    # Grafana expands $__file{} in provisioning files: the CA is read from the mounted file.
    secure: dict[str, Any] = {"tlsCACert": f"$__file{{{TLS_DIR}/ca.pem}}"} if json_data else {}
    sources = [
        {
            "name": "Prometheus",
            "uid": "prometheus",
            "type": "prometheus",
            "access": "proxy",
            "url": f"{scheme}://127.0.0.1:{PORTS['prometheus']}",
            "isDefault": True,
            "basicAuth": True,
            "basicAuthUser": monitoring_auth.MONITORING_USER,
            "jsonData": json_data,
            # Grafana expands $__file{}: the password from the container's secret file.
            "secureJsonData": {
                **secure,
                "basicAuthPassword": f"$__file{{{monitoring_auth.PASSWORD_FILE}}}",
            },
        }
    ]
    if plan.of_role("loki"):
        sources.append(
            {
                "name": "Loki",
                "uid": "loki",
                "type": "loki",
                "access": "proxy",
                "url": f"{scheme}://127.0.0.1:{PORTS['loki']}",
                "jsonData": json_data,
                "secureJsonData": secure,
            }
        )
    return {"apiVersion": 1, "datasources": sources}


def grafana_dashboard_provider() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "morgan",
                "folder": "Morgan",
                "type": "file",
                "disableDeletion": True,
                "options": {"path": "/var/lib/grafana/dashboards"},
            }
        ],
    }


def _alertmanager_url(plan: Plan) -> str | None:
    hosts = plan.hosts_of("alertmanager")
    if not hosts:
        return None
    scheme = "https" if plan.config.security.internal_tls else "http"
    return f"{scheme}://{plan.config.host(hosts[0]).address}:{PORTS['alertmanager']}"


def loki_config(plan: Plan) -> dict[str, Any]:
    tls = plan.config.security.internal_tls
    # gRPC only carries Loki's calls to itself (single binary, in-memory ring): loopback,
    # and the ring advertises loopback so those calls find it.
    server: dict[str, Any] = {
        "http_listen_port": PORTS["loki"],
        "grpc_listen_address": "127.0.0.1",
        "grpc_listen_port": LOKI_GRPC_PORT,
    }
    if tls:
        server["http_tls_config"] = {
            "cert_file": f"{TLS_DIR}/cert.pem",
            "key_file": f"{TLS_DIR}/key.pem",
        }
    return {
        "auth_enabled": False,
        "server": server,
        "common": {
            "instance_addr": "127.0.0.1",
            "path_prefix": "/loki",
            "replication_factor": 1,
            "ring": {"kvstore": {"store": "inmemory"}},
            "storage": {
                "filesystem": {"chunks_directory": "/loki/chunks", "rules_directory": "/loki/rules"}
            },
        },
        "schema_config": {
            "configs": [
                {
                    "from": "2024-01-01",
                    "store": "tsdb",
                    "object_store": "filesystem",
                    "schema": "v13",
                    "index": {"prefix": "index_", "period": "24h"},
                }
            ]
        },
        "limits_config": {"retention_period": plan.config.observability.logs_retention},
        "ruler": logs_cfg.ruler_config(plan, _alertmanager_url(plan)),
        "compactor": {
            "working_directory": "/loki/compactor",
            "retention_enabled": True,
            "delete_request_store": "filesystem",
        },
    }


# Where the engine keeps each container's json-file log, mounted read-only into Promtail.
DOCKER_CONTAINERS_DIR = "/var/lib/docker/containers"
CONTAINER_LOGS = f"{DOCKER_CONTAINERS_DIR}/*/*-json.log"


def promtail_config(plan: Plan, host: str) -> dict[str, Any]:
    cfg = plan.config
    loki_host = plan.host_of("loki")
    tls = cfg.security.internal_tls
    scheme = "https" if tls else "http"
    clients = []
    if loki_host is not None:
        client: dict[str, Any] = {
            "url": f"{scheme}://{cfg.host(loki_host).address}:{PORTS['loki']}/loki/api/v1/push",
            "external_labels": {"host": host},
        }
        if tls:
            client["tls_config"] = {
                "ca_file": f"{TLS_DIR}/ca.pem",
                "cert_file": f"{TLS_DIR}/cert.pem",
                "key_file": f"{TLS_DIR}/key.pem",
            }
        clients.append(client)
    return {
        "server": {
            "http_listen_address": "127.0.0.1",
            "http_listen_port": PORTS["promtail"],
            "grpc_listen_port": 0,
        },
        "positions": {"filename": "/promtail/positions.yaml"},
        "clients": clients,
        "scrape_configs": [
            {
                # The engine's json-file logs, read from the host's disk: no Docker socket
                # in the container. Each line's attrs carry the container's name (the
                # `tag` log option) and its morgan.role label (infra.container_run.LOG_OPTS).
                "job_name": "containers",
                "static_configs": [
                    {
                        "targets": ["localhost"],
                        "labels": {"job": "containers", "__path__": CONTAINER_LOGS},
                    }
                ],
                "pipeline_stages": [
                    {
                        "json": {
                            "expressions": {
                                "output": "log",
                                "stream": "stream",
                                "time": "time",
                                "container": "attrs.tag",
                                "role": 'attrs."morgan.role"',
                            }
                        }
                    },
                    {"timestamp": {"source": "time", "format": "RFC3339Nano"}},
                    {"labels": {"stream": None, "container": None, "role": None}},
                    {"output": {"source": "output"}},
                    {
                        "json": {
                            "source": "output",
                            "expressions": {"level": "level", "service": "service"},
                        }
                    },
                    {"labels": {"level": None, "service": None}},
                ],
            }
        ],
    }


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False)


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"
