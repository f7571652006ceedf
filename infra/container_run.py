"""How one ContainerSpec runs on a Docker engine: the one mapping both engines-facing paths
use. Pulumi turns it into a `docker.Container` (infra/components/containers.py), `morgan
deploy` into `docker create` + an upload + `docker start` (morgan.deploy.containers), so the
two cannot drift apart: same name, image, network, entrypoint, command, environment,
files, volumes, scratch mounts, healthcheck, restart policy, memory limit, GPUs, capabilities,
labels and log options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from infra.model import ContainerSpec, Healthcheck, Privileges, SecretEnv

# json-file options: rotation, and in each line's attrs the container's name and role, which
# Promtail reads from the log files (infra.configs.observability.promtail_config).
LOG_OPTS: dict[str, str] = {
    "max-size": "20m",
    "max-file": "5",
    "tag": "{{.Name}}",
    "labels": "morgan.role",
}
# Restarts of an `on-failure` container before the engine gives up.
MAX_RETRY_COUNT = 10
# The size of each scratch (tmpfs) mount, in MiB: it holds nothing a job writes on purpose.
SCRATCH_MB = 16


# File modes of uploads: a script, any other file, and a private key with a known owner.
EXECUTABLE, READABLE, OWNER_ONLY = 0o755, 0o644, 0o400


@dataclass(frozen=True)
class Upload:
    """A file written into the container before it starts: literal content, one of the
    role's TLS files (`tls` = "ca", "cert" or "key"), or the value of the stack's secret
    `secret`; each path supplies the last two. `owner` (uid, gid): whose it is; None
    leaves it root's."""

    path: str
    content: str | None = None
    tls: Literal["ca", "cert", "key"] | None = None
    secret: str | None = None
    mode: int = READABLE
    owner: tuple[int, int] | None = None


@dataclass(frozen=True)
class Mount:
    target: str
    volume: str | None = None  # a named volume on the host's engine
    host_path: str | None = None  # or a path on the host
    read_only: bool = False


@dataclass(frozen=True)
class ContainerRun:
    name: str
    host: str
    image: str
    entrypoint: tuple[str, ...] | None
    command: tuple[str, ...]
    env: dict[str, str]
    secret_env: tuple[SecretEnv, ...]
    uploads: tuple[Upload, ...]
    mounts: tuple[Mount, ...]
    healthcheck: Healthcheck
    restart: Literal["unless-stopped", "on-failure"]
    max_retry_count: int | None
    must_run: bool
    memory_mb: int
    gpu_devices: tuple[str, ...]
    privileges: Privileges
    labels: dict[str, str]
    certificate: str | None  # infra.model.certificate_name, when the container holds one
    scratch: tuple[str, ...] = ()  # tmpfs mounts of SCRATCH_MB
    network_mode: str = "host"
    stop_grace_seconds: int = 10
    log_opts: tuple[tuple[str, str], ...] = tuple(LOG_OPTS.items())


def private_upload(
    path: str,
    owner: tuple[int, int] | None,
    *,
    tls: Literal["key"] | None = None,
    secret: str | None = None,
) -> Upload:
    """A TLS key or a secret: its user's alone where the plan knows the user, else
    readable by all (an image that starts as root and switches user must still read it)."""
    if owner is None:
        return Upload(path=path, tls=tls, secret=secret)
    return Upload(path=path, tls=tls, secret=secret, mode=OWNER_ONLY, owner=owner)


def container_run(spec: ContainerSpec) -> ContainerRun:
    uploads = [
        Upload(
            path=f.path, content=f.content, mode=EXECUTABLE if f.path.endswith(".sh") else READABLE
        )
        for f in spec.files
    ]
    if spec.tls is not None:
        uploads += [
            Upload(path=spec.tls.ca, tls="ca"),
            Upload(path=spec.tls.cert, tls="cert"),
            private_upload(spec.tls.key, spec.runs_as, tls="key"),
        ]
    uploads += [private_upload(f.path, spec.runs_as, secret=f.secret) for f in spec.secret_files]
    mounts = [Mount(target=v.path, volume=v.name, read_only=v.read_only) for v in spec.volumes]
    mounts += [Mount(target=b.path, host_path=b.source, read_only=b.read_only) for b in spec.binds]
    return ContainerRun(
        name=spec.name,
        host=spec.host,
        image=spec.image,
        entrypoint=spec.entrypoint or None,
        command=spec.command,
        env=dict(sorted(spec.env.items())),
        secret_env=spec.secret_env,
        uploads=tuple(uploads),
        mounts=tuple(mounts),
        healthcheck=spec.healthcheck,
        restart=spec.restart,
        max_retry_count=MAX_RETRY_COUNT if spec.restart == "on-failure" else None,
        must_run=not spec.one_shot,
        memory_mb=spec.memory_mb,
        gpu_devices=spec.gpu_devices,
        privileges=spec.privileges,
        labels=dict(sorted(spec.labels.items())),
        certificate=spec.certificate,
        scratch=spec.scratch,
        stop_grace_seconds=spec.stop_grace_seconds,
    )
