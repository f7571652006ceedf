"""Turn a ContainerSpec into a docker.Container on its host's provider."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from infra.components.host import Host
from infra.components.pki import Pki
from infra.components.secrets import FleetSecrets
from infra.container_run import SCRATCH_MB, ContainerRun, container_run
from infra.model import ContainerSpec


@dataclass(frozen=True)
class DeployContext:
    """What every component needs to place containers: hosts, secrets, certificates, images."""

    hosts: dict[str, Host]
    secrets: FleetSecrets
    pki: Pki | None
    built_images: dict[tuple[str, str], pulumi.Resource] = field(default_factory=dict)


def _envs(run: ContainerRun, ctx: DeployContext) -> pulumi.Input[list[str]]:
    plain = [f"{k}={v}" for k, v in run.env.items()]
    if not run.secret_env:
        return plain
    secret = [ctx.secrets.render(f"{e.name}={e.template}", e.secrets) for e in run.secret_env]
    return pulumi.Output.secret(pulumi.Output.all(*plain, *secret))


def _uploads(run: ContainerRun, ctx: DeployContext) -> list[docker.ContainerUploadArgs]:
    out = []
    for upload in run.uploads:
        content: pulumi.Input[str]
        if upload.secret is not None:
            content = ctx.secrets.render("{" + upload.secret + "}", (upload.secret,))
        elif upload.tls is None:
            assert upload.content is not None
            content = upload.content
        else:
            if ctx.pki is None or run.certificate is None:
                raise ValueError(f"{run.name}: TLS files requested but the stack has no Pki")
            issued = ctx.pki.certificates[run.certificate]
            content = {
                "ca": ctx.pki.ca_cert_pem,
                "cert": issued.cert_pem,
                "key": issued.key_pem,
            }[upload.tls]
        owner = upload.owner
        out.append(
            docker.ContainerUploadArgs(
                file=upload.path,
                content=content,
                permissions=f"{upload.mode:04o}",
                owner=str(owner[0]) if owner else None,
                group=str(owner[1]) if owner else None,
            )
        )
    return out


def make_container(
    spec: ContainerSpec,
    ctx: DeployContext,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] | None = None,
) -> docker.Container:
    run = container_run(spec)
    host = ctx.hosts[spec.host]
    built = ctx.built_images.get((spec.host, spec.image))
    if built is not None:
        image: pulumi.Input[str] = spec.image
        deps = [built, *(depends_on or [])]
    else:
        image = host.images[spec.image].image_id
        deps = list(depends_on or [])
    hc = run.healthcheck
    volumes = [
        docker.ContainerVolumeArgs(
            volume_name=host.volumes[m.volume].name, container_path=m.target,
            read_only=m.read_only,
        )
        if m.volume is not None
        else docker.ContainerVolumeArgs(
            host_path=m.host_path, container_path=m.target, read_only=m.read_only
        )
        for m in run.mounts
    ]  # fmt: skip
    return docker.Container(
        run.name,
        name=run.name,
        image=image,
        network_mode=run.network_mode,
        entrypoints=list(run.entrypoint) if run.entrypoint else None,
        command=list(run.command) or None,
        envs=_envs(run, ctx),
        uploads=_uploads(run, ctx) or None,
        volumes=volumes or None,
        tmpfs={path: f"size={SCRATCH_MB}m" for path in run.scratch} or None,
        healthcheck=docker.ContainerHealthcheckArgs(
            tests=list(hc.test),
            interval=hc.interval,
            timeout=hc.timeout,
            retries=hc.retries,
            start_period=hc.start_period,
        ),
        restart=run.restart,
        max_retry_count=run.max_retry_count,
        must_run=run.must_run,
        # A replaced or removed container gets SIGTERM and this long to drain.
        stop_timeout=run.stop_grace_seconds,
        destroy_grace_seconds=run.stop_grace_seconds,
        memory=run.memory_mb,
        device_requests=[
            docker.ContainerDeviceRequestArgs(
                driver="nvidia", device_ids=list(run.gpu_devices), capabilities=["gpu"]
            )
        ]
        if run.gpu_devices
        else None,
        capabilities=docker.ContainerCapabilitiesArgs(
            drops=list(run.privileges.cap_drop) or None, adds=list(run.privileges.cap_add) or None
        )
        if run.privileges.cap_drop or run.privileges.cap_add
        else None,
        security_opts=["no-new-privileges:true"] if run.privileges.no_new_privileges else None,
        labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in run.labels.items()],
        log_opts=dict(run.log_opts),
        opts=pulumi.ResourceOptions(parent=parent, provider=host.provider, depends_on=deps),
    )
