"""Images: build Morgan's images on each host that runs them, for that host's platform."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.components.host import Host
from infra.specs import ImageRef


@dataclass(frozen=True)
class ImageBuild:
    host: str
    name: str
    ref: ImageRef
    base_image: str
    platform: str
    context: str


@dataclass(frozen=True)
class ImagesArgs:
    hosts: dict[str, Host]
    builds: tuple[ImageBuild, ...]
    push: bool = False


class Images(pulumi.ComponentResource):
    built: dict[tuple[str, str], docker.Image]

    def __init__(
        self, name: str, args: ImagesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:images:Images", name, None, opts)
        self.built = {}
        for build in args.builds:
            host = args.hosts[build.host]
            self.built[(build.host, build.name)] = docker.Image(
                f"{build.host}-{build.ref.service}-{build.ref.variant}",
                image_name=build.name,
                build=docker.DockerBuildArgs(
                    context=build.context,
                    dockerfile=f"{build.context}/Dockerfile",
                    platform=build.platform,
                    args={"BASE_IMAGE": build.base_image, "MORGAN_DEVICE": build.ref.variant},
                ),
                skip_push=not args.push,
                opts=pulumi.ResourceOptions(parent=self, provider=host.provider),
            )
        self.register_outputs({"images": sorted({f"{b.name} ({b.platform})" for b in args.builds})})
