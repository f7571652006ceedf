"""Container specs of the exporters: node-exporter on every host, the PostgreSQL and Redis
exporters next to their servers. Each serves its metrics on the host's address (TLS with
the role's certificate when internal TLS is on) and reads what it watches over loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infra.configs import data as data_cfg
from infra.configs import observability as obs_cfg
from infra.model import (
    TLS_DIR,
    BindMount,
    ConfigFile,
    ContainerSpec,
    Healthcheck,
    Port,
    SecretEnv,
    SecretFile,
)
from infra.placement import Plan, Replica
from infra.spec_common import port_encryption, wget_probe
from infra.support_privileges import image_user


def _serving(
    plan: Plan, replica: Replica, role: str, flag_style: str
) -> tuple[list[str], list[ConfigFile]]:
    """The listen flag and, with TLS, how the exporter serves it (exporter-toolkit's web
    config, or redis_exporter's own flags)."""
    port = obs_cfg.PORTS[role]
    dash = "-" if flag_style == "go-flag" else "--"
    flags = [f"{dash}web.listen-address={plan.listen_address(replica.host)}:{port}"]
    files: list[ConfigFile] = []
    if plan.config.security.internal_tls:
        if flag_style == "go-flag":
            flags += [f"-tls-server-cert-file={TLS_DIR}/cert.pem",
                      f"-tls-server-key-file={TLS_DIR}/key.pem"]  # fmt: skip
        else:
            path = f"/etc/{role}/web.yml"
            files.append(ConfigFile(path, obs_cfg.to_yaml(obs_cfg.web_config(plan))))
            flags.append(f"--web.config.file={path}")
    return flags, files


def _exporter(plan: Plan, replica: Replica, base: dict[str, Any], **spec: Any) -> ContainerSpec:
    port = obs_cfg.PORTS[replica.role]
    defaults: dict[str, Any] = {
        "ports": (Port(port, encryption=port_encryption(plan), purpose="metrics"),),
        "healthcheck": Healthcheck(
            test=wget_probe(port, "/", plan.config.security.internal_tls), start_period="10s"
        ),
        "memory_mb": 64,
        "runs_as": image_user(spec["image"]),
    }
    return ContainerSpec(**{**defaults, **spec}, **base)


def node_exporter_spec(plan: Plan, replica: Replica, base: dict[str, Any]) -> ContainerSpec:
    """The host's CPU, memory, disks and network: it reads the host's root through a
    read-only bind (host networking gives it the host's interfaces)."""
    flags, files = _serving(plan, replica, "node-exporter", "kingpin")
    return _exporter(
        plan, replica, base,
        image=plan.config.images.support.node_exporter,
        command=(f"--path.rootfs={obs_cfg.HOST_ROOT}", *flags),
        binds=(BindMount("/", obs_cfg.HOST_ROOT, read_only=True),),
        files=tuple(files),
    )  # fmt: skip


def postgres_exporter_spec(plan: Plan, replica: Replica, base: dict[str, Any]) -> ContainerSpec:
    """The PostgreSQL server of its host (primary or standby), over loopback: pg_hba lets
    127.0.0.1 in with a password, without TLS."""
    flags, files = _serving(plan, replica, "postgres-exporter", "kingpin")
    # Server and user in the environment, the password from its file (DATA_SOURCE_PASS_FILE).
    password = SecretFile("DATA_SOURCE_PASS", "postgres_password")
    env = {
        "DATA_SOURCE_URI": f"127.0.0.1:{data_cfg.PG_PORT}/postgres?sslmode=disable",
        "DATA_SOURCE_USER": plan.config.postgres.user,
        **dict([password.env]),
    }
    return _exporter(
        plan, replica, base,
        image=plan.config.images.support.postgres_exporter,
        command=tuple(flags),
        env=env,
        secret_files=(password,),
        files=tuple(files),
    )  # fmt: skip


def redis_exporter_spec(plan: Plan, replica: Replica, base: dict[str, Any]) -> ContainerSpec:
    """The Redis node of its host, over loopback (TLS with the role's certificate when the
    nodes speak TLS); the password comes from REDIS_PASSWORD, never from a flag."""
    flags, files = _serving(plan, replica, "redis-exporter", "go-flag")
    tls = plan.config.security.internal_tls
    scheme = "rediss" if tls else "redis"
    command = [f"-redis.addr={scheme}://127.0.0.1:{data_cfg.REDIS_PORT}", *flags]
    if plan.config.redis.mode == "cluster":
        command.append("-is-cluster")
    if tls:
        command += [f"-tls-ca-cert-file={TLS_DIR}/ca.pem",
                    f"-tls-client-cert-file={TLS_DIR}/cert.pem",
                    f"-tls-client-key-file={TLS_DIR}/key.pem"]  # fmt: skip
    return _exporter(
        plan, replica, base,
        image=plan.config.images.support.redis_exporter,
        command=tuple(command),
        secret_env=(SecretEnv("REDIS_PASSWORD", "{redis_password}"),),
        files=tuple(files),
    )  # fmt: skip


def dcgm_exporter_spec(plan: Plan, replica: Replica, base: dict[str, Any]) -> ContainerSpec:
    """NVIDIA's DCGM exporter: the GPUs the host lists (gpu.devices), nothing else."""
    host = plan.config.host(replica.host)
    assert host.gpu is not None, f"{replica.host} has no GPU for the DCGM exporter"
    port = obs_cfg.PORTS["dcgm-exporter"]
    command = [f"--address={plan.listen_address(replica.host)}:{port}"]
    files: list[ConfigFile] = []
    if plan.config.security.internal_tls:
        path = "/etc/dcgm-exporter/web.yml"
        files.append(ConfigFile(path, obs_cfg.to_yaml(obs_cfg.web_config(plan))))
        command.append(f"--web-config-file={path}")
    return _exporter(
        plan, replica, base,
        image=plan.config.images.support.dcgm_exporter,
        command=tuple(command),
        env={"NVIDIA_VISIBLE_DEVICES": ",".join(host.gpu.devices)},
        gpu_devices=host.gpu.devices,
        files=tuple(files),
        # Its Ubuntu image has bash, not wget: the probe opens the port.
        healthcheck=Healthcheck(
            test=("CMD-SHELL", f"bash -c ':> /dev/tcp/127.0.0.1/{port}' || exit 1"),
            start_period="30s",
        ),
        # nv-hostengine, DCGM's daemon, runs inside it.
        memory_mb=512,
    )  # fmt: skip


EXPORTER_SPECS: dict[str, Callable[[Plan, Replica, dict[str, Any]], ContainerSpec]] = {
    "node-exporter": node_exporter_spec,
    "postgres-exporter": postgres_exporter_spec,
    "redis-exporter": redis_exporter_spec,
    "dcgm-exporter": dcgm_exporter_spec,
}
