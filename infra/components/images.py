"""Images: build Morgan's images on each host that runs them, for that host's platform."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.builds import BuildStep
from infra.components.host import Host


@dataclass(frozen=True)
class ImagesArgs:
    hosts: dict[str, Host]
    steps: tuple[BuildStep, ...]
    context: str
    push: bool = False


class Images(pulumi.ComponentResource):
    built: dict[tuple[str, str], docker.Image]

    def __init__(
        self, name: str, args: ImagesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:images:Images", name, None, opts)
        self.built = {}
        for step in args.steps:  # runtime images come first: services start FROM them
            host = args.hosts[step.host]
            after = [self.built[(step.host, n)] for n in step.after]
            resource_name = f"{step.host}-{step.name.rsplit('/', 1)[-1].replace(':', '-')}"
            self.built[step.key] = docker.Image(
                resource_name,
                image_name=step.name,
                build=docker.DockerBuildArgs(
                    context=args.context,
                    dockerfile=f"{args.context}/{step.dockerfile}",
                    platform=step.platform,
                    args=step.args,
                ),
                skip_push=not args.push,
                opts=pulumi.ResourceOptions(parent=self, provider=host.provider, depends_on=after),
            )
        self.register_outputs({"images": sorted({f"{s.name} ({s.platform})" for s in args.steps})})
