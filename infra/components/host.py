"""Host: the Docker provider of one machine, its volumes and supporting-server images."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from infra.config import HostConfig


@dataclass(frozen=True)
class HostArgs:
    host: HostConfig
    volumes: tuple[str, ...] = ()
    pulled_images: tuple[str, ...] = ()
    node_labels: dict[str, str] = field(default_factory=dict)


class Host(pulumi.ComponentResource):
    """One Docker engine. Every resource on the machine uses `self.provider`, never a default."""

    provider: docker.Provider
    volumes: dict[str, docker.Volume]
    images: dict[str, docker.RemoteImage]
    labels: pulumi.Output[dict[str, str]]

    def __init__(
        self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:host:Host", name, None, opts)
        host = args.host
        cert_path = os.path.expanduser(host.docker_tls.cert_path) if host.docker_tls else None
        self.provider = docker.Provider(
            f"{name}-docker",
            host=host.docker,
            ssh_opts=list(host.ssh_opts) or None,
            cert_path=cert_path,
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, provider=self.provider)
        self.volumes = {
            volume: docker.Volume(f"{name}-{volume}", name=volume, opts=child)
            for volume in args.volumes
        }
        self.images = {
            image: docker.RemoteImage(
                f"{name}-image-{image.replace('/', '-').replace(':', '-')}",
                name=image,
                keep_locally=True,
                platform=host.platform,
                opts=child,
            )
            for image in args.pulled_images
        }
        self.name = host.name
        self.labels = pulumi.Output.from_input(args.node_labels)
        self.register_outputs({"labels": self.labels, "docker": host.docker})
