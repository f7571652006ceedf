"""Data stores: PostgresCluster (primary + streaming standby), RedisCluster, Qdrant."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.components.containers import DeployContext, make_container
from infra.model import ContainerSpec


@dataclass(frozen=True)
class PostgresClusterArgs:
    ctx: DeployContext
    primary: ContainerSpec
    standbys: tuple[ContainerSpec, ...]
    # The one-shot step that makes the application role (infra.configs.pg_roles).
    app_role: ContainerSpec


class PostgresCluster(pulumi.ComponentResource):
    primary: docker.Container
    standbys: list[docker.Container]
    app_role: docker.Container
    replication_password: pulumi.Output[str]

    def __init__(
        self, name: str, args: PostgresClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:data:PostgresCluster", name, None, opts)
        self.primary = make_container(args.primary, args.ctx, self)
        # A standby clones the primary with pg_basebackup on first start.
        self.standbys = [
            make_container(s, args.ctx, self, depends_on=[self.primary]) for s in args.standbys
        ]
        self.app_role = make_container(
            args.app_role, args.ctx, self, depends_on=[self.primary, *self.standbys]
        )
        self.replication_password = args.ctx.secrets.values["replication_password"]
        self.primary_host = args.primary.host
        self.register_outputs(
            {
                "primary_host": args.primary.host,
                "standby_hosts": [s.host for s in args.standbys],
                "replication_password": self.replication_password,
            }
        )


@dataclass(frozen=True)
class RedisClusterArgs:
    ctx: DeployContext
    nodes: tuple[ContainerSpec, ...]
    create: ContainerSpec | None


class RedisCluster(pulumi.ComponentResource):
    nodes: list[docker.Container]
    create: docker.Container | None

    def __init__(
        self, name: str, args: RedisClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:data:RedisCluster", name, None, opts)
        self.nodes = [make_container(n, args.ctx, self) for n in args.nodes]
        self.create = (
            make_container(args.create, args.ctx, self, depends_on=self.nodes)
            if args.create is not None
            else None
        )
        self.register_outputs({"node_hosts": [n.host for n in args.nodes]})


@dataclass(frozen=True)
class QdrantArgs:
    ctx: DeployContext
    server: ContainerSpec


class Qdrant(pulumi.ComponentResource):
    container: docker.Container

    def __init__(
        self, name: str, args: QdrantArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:data:Qdrant", name, None, opts)
        self.container = make_container(args.server, args.ctx, self)
        self.register_outputs({"host": args.server.host})
