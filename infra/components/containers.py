"""Turn a ContainerSpec into a docker.Container on its host's provider."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from infra.components.host import Host
from infra.components.pki import Pki
from infra.components.secrets import FleetSecrets
from infra.model import ContainerSpec


@dataclass(frozen=True)
class DeployContext:
    """What every component needs to place containers: hosts, secrets, certificates, images."""

    hosts: dict[str, Host]
    secrets: FleetSecrets
    pki: Pki | None
    built_images: dict[tuple[str, str], pulumi.Resource] = field(default_factory=dict)


def _envs(spec: ContainerSpec, ctx: DeployContext) -> pulumi.Input[list[str]]:
    plain = [f"{k}={v}" for k, v in sorted(spec.env.items())]
    if not spec.secret_env:
        return plain
    secret = [ctx.secrets.render(f"{e.name}={e.template}", e.secrets) for e in spec.secret_env]
    return pulumi.Output.secret(pulumi.Output.all(*plain, *secret))


def _uploads(spec: ContainerSpec, ctx: DeployContext) -> list[docker.ContainerUploadArgs]:
    uploads = [
        docker.ContainerUploadArgs(
            file=f.path, content=f.content, executable=f.path.endswith(".sh")
        )
        for f in spec.files
    ]
    if spec.tls is not None:
        if ctx.pki is None:
            raise ValueError(f"{spec.name}: TLS files requested but the stack has no Pki")
        issued = ctx.pki.certificates[spec.tls.role]
        uploads += [
            docker.ContainerUploadArgs(file=spec.tls.ca, content=ctx.pki.ca_cert_pem),
            docker.ContainerUploadArgs(file=spec.tls.cert, content=issued.cert_pem),
            docker.ContainerUploadArgs(file=spec.tls.key, content=issued.key_pem),
        ]
    return uploads


def make_container(
    spec: ContainerSpec,
    ctx: DeployContext,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] | None = None,
) -> docker.Container:
    host = ctx.hosts[spec.host]
    built = ctx.built_images.get((spec.host, spec.image))
    if built is not None:
        image: pulumi.Input[str] = spec.image
        deps = [built, *(depends_on or [])]
    else:
        image = host.images[spec.image].image_id
        deps = list(depends_on or [])
    hc = spec.healthcheck
    volumes = [
        docker.ContainerVolumeArgs(
            volume_name=host.volumes[v.name].name, container_path=v.path, read_only=v.read_only
        )
        for v in spec.volumes
    ] + [
        docker.ContainerVolumeArgs(host_path=b.source, container_path=b.path, read_only=b.read_only)
        for b in spec.binds
    ]
    return docker.Container(
        spec.name,
        name=spec.name,
        image=image,
        network_mode="host",
        entrypoints=list(spec.entrypoint) if spec.entrypoint else None,
        command=list(spec.command) or None,
        envs=_envs(spec, ctx),
        uploads=_uploads(spec, ctx) or None,
        volumes=volumes or None,
        healthcheck=docker.ContainerHealthcheckArgs(
            tests=list(hc.test),
            interval=hc.interval,
            timeout=hc.timeout,
            retries=hc.retries,
            start_period=hc.start_period,
        ),
        restart=spec.restart,
        max_retry_count=10 if spec.restart == "on-failure" else None,
        must_run=not spec.one_shot,
        memory=spec.memory_mb,
        device_requests=[
            docker.ContainerDeviceRequestArgs(driver="nvidia", count=-1, capabilities=["gpu"])
        ]
        if spec.gpu
        else None,
        labels=[
            docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(spec.labels.items())
        ],
        log_opts={"max-size": "20m", "max-file": "5"},
        opts=pulumi.ResourceOptions(parent=parent, provider=host.provider, depends_on=deps),
    )
