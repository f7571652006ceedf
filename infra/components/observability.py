"""Observability: Prometheus, Alertmanager, Grafana, Loki and one Promtail per host."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.components.containers import DeployContext, make_container
from infra.model import ContainerSpec


@dataclass(frozen=True)
class ObservabilityArgs:
    ctx: DeployContext
    containers: tuple[ContainerSpec, ...]
    grafana_url: str | None


class Observability(pulumi.ComponentResource):
    containers: list[docker.Container]
    grafana_url: pulumi.Output[str | None]

    def __init__(
        self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:observability:Observability", name, None, opts)
        self.containers = [make_container(s, args.ctx, self) for s in args.containers]
        self.grafana_url = pulumi.Output.from_input(args.grafana_url)
        self.grafana_admin_password = args.ctx.secrets.values["grafana_admin_password"]
        # Prometheus' and Alertmanager's basic auth (user `morgan`).
        self.monitoring_password = args.ctx.secrets.values["monitoring_password"]
        self.register_outputs(
            {"grafana_url": self.grafana_url, "roles": sorted({s.role for s in args.containers})}
        )
