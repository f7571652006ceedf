"""Stack outputs (documented in docs/infrastructure.md)."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.fleet import Fleet


def stack_outputs(fleet: Fleet) -> dict[str, Any]:
    return {
        "gateway_url": fleet.gateway.url,
        "traefik_dashboard_url": fleet.gateway.dashboard_url,
        "traefik_dashboard_password": fleet.gateway.dashboard_password,
        "consul_ui_url": fleet.consul.ui_url,
        "consul_management_token": fleet.consul.management_token,
        "grafana_url": fleet.observability.grafana_url,
        "grafana_admin_password": fleet.observability.grafana_admin_password,
        "monitoring_password": fleet.observability.monitoring_password,
        "services_by_host": fleet.plan.by_host(),
        "ca_certificate": fleet.pki.ca_cert_pem if fleet.pki else None,
        # What the daemons of tcp:// hosts trust (apart from the fleet CA).
        "docker_ca_certificate": fleet.pki.docker_ca_cert_pem if fleet.pki else None,
        "kv_keys": fleet.kv.keys,
        "core_service_key_id": fleet.secrets.service_key.key_id,
    }


def export_outputs(fleet: Fleet) -> None:
    for key, value in stack_outputs(fleet).items():
        pulumi.export(key, value)
