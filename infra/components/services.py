"""MorganServices: the containers of core, llm, stt, tts and vad (env, healthchecks, limits)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.components.containers import DeployContext, make_container
from infra.model import ContainerSpec


@dataclass(frozen=True)
class MorganServicesArgs:
    ctx: DeployContext
    replicas: tuple[ContainerSpec, ...]


class MorganServices(pulumi.ComponentResource):
    containers: list[docker.Container]

    def __init__(
        self,
        name: str,
        args: MorganServicesArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("morgan:services:MorganServices", name, None, opts)
        self.containers = [make_container(s, args.ctx, self) for s in args.replicas]
        by_host: dict[str, list[str]] = {}
        for spec in args.replicas:
            by_host.setdefault(spec.host, []).append(spec.name)
        self.by_host = pulumi.Output.from_input(by_host)
        self.register_outputs({"by_host": self.by_host})
