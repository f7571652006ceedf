"""One container on its host: `docker create` from the shared ContainerRun, the files
uploaded before it starts, and a hash label that makes a second deploy a no-op.

The argument list is what `infra.container_run` says Pulumi's docker.Container gets:
host network, entrypoint, command, environment (on stdin), uploads, volumes,
healthcheck, restart policy, memory limit, GPUs, capabilities, labels and log options.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import tarfile
from dataclasses import asdict, dataclass
from typing import Literal

from infra.container_run import SCRATCH_MB, ContainerRun
from morgan.deploy.engine import DeployError, DockerEngine
from morgan.deploy.pki import IssuedTls

HASH_LABEL = "org.morgan.deploy-hash"
Change = Literal["created", "replaced", "unchanged", "removed"]
# infra.spec_common.role_labels puts both on every container.
STACK_LABEL, ROLE_LABEL = "morgan.stack", "morgan.role"


@dataclass(frozen=True)
class FileOut:
    """An uploaded file's content, mode and owner (uid, gid; root's when None)."""

    content: str
    mode: int
    owner: tuple[int, int] | None = None


@dataclass(frozen=True)
class Prepared:
    """A ContainerRun with its secrets filled in and its TLS files chosen."""

    run: ContainerRun
    env: dict[str, str]
    files: dict[str, FileOut]  # path -> what lands there
    image_id: str

    @property
    def digest(self) -> str:
        body = json.dumps(
            {"run": asdict(self.run), "env": self.env, "image": self.image_id,
             "files": {path: asdict(f) for path, f in self.files.items()}},
            sort_keys=True, default=str,
        )  # fmt: skip
        return hashlib.sha256(body.encode()).hexdigest()[:24]


def prepare(run: ContainerRun, secrets: dict[str, str], tls: IssuedTls | None,
            image_id: str) -> Prepared:  # fmt: skip
    env = dict(run.env)
    for item in run.secret_env:
        env[item.name] = item.render(secrets)
    for key, value in env.items():
        if "\n" in value:
            raise DeployError(
                f"{run.host}/{run.name}: environment variable {key} holds a line break, which"
                " an env file cannot carry; make its value one line (JSON without indent)"
            )
    files: dict[str, FileOut] = {}
    for upload in run.uploads:
        if upload.secret is not None:
            content = secrets[upload.secret]
        elif upload.tls is not None:
            if tls is None:
                raise DeployError(f"{run.host}/{run.name}: TLS files asked for, no certificate")
            content = tls.content(upload.tls)
        else:
            content = upload.content or ""
        files[upload.path] = FileOut(content, upload.mode, upload.owner)
    return Prepared(run, env, files, image_id)


def _health_cmd(test: tuple[str, ...]) -> str:
    if test[0] == "CMD-SHELL":
        return test[1]
    return shlex.join(test[1:])


def create_args(p: Prepared) -> list[str]:
    """`docker create` arguments (the environment comes on stdin as an env file)."""
    run, hc = p.run, p.run.healthcheck
    restart = run.restart
    if restart == "on-failure" and run.max_retry_count:
        restart = f"on-failure:{run.max_retry_count}"  # type: ignore[assignment]
    args = ["create", "--name", run.name, "--network", run.network_mode,
            "--restart", restart, "--memory", f"{run.memory_mb}m",
            "--env-file", "/dev/stdin",
            "--health-cmd", _health_cmd(hc.test), "--health-interval", hc.interval,
            "--health-timeout", hc.timeout, "--health-retries", str(hc.retries),
            "--health-start-period", hc.start_period,
            "--stop-timeout", str(run.stop_grace_seconds),
            "--label", f"{HASH_LABEL}={p.digest}"]  # fmt: skip
    for key, value in run.log_opts:
        args += ["--log-opt", f"{key}={value}"]
    for key, value in run.labels.items():
        args += ["--label", f"{key}={value}"]
    for m in run.mounts:
        source = m.volume if m.volume is not None else m.host_path
        args += ["-v", f"{source}:{m.target}{':ro' if m.read_only else ''}"]
    for path in run.scratch:
        args += ["--tmpfs", f"{path}:size={SCRATCH_MB}m"]
    if run.gpu_devices:
        # The quotes keep the engine from reading the comma as the next --gpus option.
        args += ["--gpus", f'"device={",".join(run.gpu_devices)}"']
    args += [f"--cap-drop={cap}" for cap in run.privileges.cap_drop]
    args += [f"--cap-add={cap}" for cap in run.privileges.cap_add]
    if run.privileges.no_new_privileges:
        args += ["--security-opt", "no-new-privileges=true"]
    if run.entrypoint:
        args += ["--entrypoint", run.entrypoint[0]]
    args.append(run.image)
    if run.entrypoint and len(run.entrypoint) > 1:
        args += list(run.entrypoint[1:])
    args += list(run.command)
    return args


def env_file(p: Prepared) -> bytes:
    return "".join(f"{k}={v}\n" for k, v in sorted(p.env.items())).encode()


def upload_tar(p: Prepared) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        # Files only: the engine makes missing folders and leaves existing ones as they are.
        for path in sorted(p.files):
            file = p.files[path]
            data = file.content.encode()
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode = len(data), file.mode
            # `docker cp` keeps the archive's numeric owner.
            info.uid, info.gid = file.owner or (0, 0)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def current_state(engine: DockerEngine, name: str) -> tuple[str, str] | None:
    """(deploy hash, status) of the host's container `name`, or None when there is none."""
    fmt = '{{index .Config.Labels "' + HASH_LABEL + '"}} {{.State.Status}}'
    proc = engine.run("inspect", "-f", fmt, name, check=False, timeout=60)
    if proc.returncode != 0:
        return None
    digest, _, status = proc.stdout.decode().strip().partition(" ")
    return digest, status


def _up_to_date(state: tuple[str, str] | None, p: Prepared) -> bool:
    return (
        state is not None
        and state[0] == p.digest
        and (state[1] == "running" or (state[1] == "exited" and not p.run.must_run))
    )


def planned_change(engine: DockerEngine, p: Prepared) -> Change:
    """What `apply` would do to the host's container, without doing it."""
    state = current_state(engine, p.run.name)
    if _up_to_date(state, p):
        return "unchanged"
    return "created" if state is None else "replaced"


def apply(engine: DockerEngine, p: Prepared) -> Change:
    """Make the host's container match `p`: leave it, or (re)create and start it."""
    state = current_state(engine, p.run.name)
    if _up_to_date(state, p):
        return "unchanged"
    if state is not None:
        if state[1] == "running":
            # SIGTERM, and the container's grace to drain, before it is removed.
            grace = p.run.stop_grace_seconds
            engine.run("stop", "-t", str(grace), p.run.name, timeout=grace + 60)
        engine.run("rm", "-f", "-v", p.run.name, timeout=120)  # -v: its anonymous volumes too
    engine.run(*create_args(p), stdin=env_file(p), timeout=120)
    if p.files:
        engine.run("cp", "-", f"{p.run.name}:/", stdin=upload_tar(p), timeout=120)
    engine.run("start", p.run.name, timeout=120)
    return "created" if state is None else "replaced"


def remove_unplanned(engine: DockerEngine, stack: str, planned: set[str],
                     roles: set[str] | None = None) -> list[str]:  # fmt: skip
    """Remove the stack's containers on this host (of `roles`, or of any role) that the
    plan no longer has there: a service moved to another host or scaled down, a replica
    renamed, a role turned off. Each is stopped with the grace it was made with; its
    named volumes stay. Returns their names."""
    fmt = '{{.Names}}|{{.Label "' + ROLE_LABEL + '"}}'
    listed = engine.text("ps", "-a", "--filter", f"label={STACK_LABEL}={stack}",
                         "--format", fmt, timeout=60).splitlines()  # fmt: skip
    removed = []
    for row in listed:
        name, _, role = row.partition("|")
        if name in planned or (roles is not None and role not in roles):
            continue
        engine.run("stop", name, timeout=300)  # its own --stop-timeout
        engine.run("rm", "-v", name, timeout=120)
        removed.append(name)
    return sorted(removed)
