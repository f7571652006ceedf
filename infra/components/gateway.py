"""Gateway: Traefik with the consulCatalog provider, HTTPS, rate limits and dashboard auth."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.components.containers import DeployContext, make_container
from infra.model import ContainerSpec


@dataclass(frozen=True)
class GatewayArgs:
    ctx: DeployContext
    traefik: ContainerSpec
    url: str
    dashboard_url: str
    dashboard_user: str


class Gateway(pulumi.ComponentResource):
    container: docker.Container
    url: pulumi.Output[str]
    dashboard_password: pulumi.Output[str]

    def __init__(
        self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:gateway:Gateway", name, None, opts)
        self.container = make_container(args.traefik, args.ctx, self)
        self.url = pulumi.Output.from_input(args.url)
        self.dashboard_url = pulumi.Output.from_input(args.dashboard_url)
        self.dashboard_user = args.dashboard_user
        self.dashboard_password = args.ctx.secrets.dashboard_password
        self.register_outputs(
            {
                "url": self.url,
                "dashboard_url": self.dashboard_url,
                "dashboard_password": self.dashboard_password,
            }
        )
