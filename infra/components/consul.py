"""ConsulCluster: servers and client agents (gossip key, TLS, ACL bootstrap token)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.components.containers import DeployContext, make_container
from infra.model import ContainerSpec


@dataclass(frozen=True)
class ConsulClusterArgs:
    ctx: DeployContext
    servers: tuple[ContainerSpec, ...]
    agents: tuple[ContainerSpec, ...]
    ui_url: str
    api_address: str
    api_scheme: str


class ConsulCluster(pulumi.ComponentResource):
    servers: list[docker.Container]
    agents: list[docker.Container]
    ui_url: pulumi.Output[str]
    management_token: pulumi.Output[str]

    def __init__(
        self, name: str, args: ConsulClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:consul:ConsulCluster", name, None, opts)
        self.servers = [make_container(s, args.ctx, self) for s in args.servers]
        # Agents join through retry_join; starting them after the servers saves retries.
        self.agents = [
            make_container(a, args.ctx, self, depends_on=self.servers) for a in args.agents
        ]
        self.ui_url = pulumi.Output.from_input(args.ui_url)
        self.api_address = pulumi.Output.from_input(args.api_address)
        self.api_scheme = args.api_scheme
        self.management_token = args.ctx.secrets.values["consul_management_token"]
        self.register_outputs(
            {
                "ui_url": self.ui_url,
                "servers": [c.name for c in self.servers],
                "agents": [c.name for c in self.agents],
            }
        )
