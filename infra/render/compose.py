"""Render the deployment as per-host compose files (the Swarm stack file: `swarm.py`).

Both kinds read the same `Deployment` as the Pulumi program, plus its one-shot KV seed
(Pulumi writes the KV entries itself). Secrets never appear in the files: they are
`${MORGAN_...}` variables (`Deployment.secret_variables`); a compose file mounts each
container's TLS material from `./tls/<certificate>/` next to it (one certificate per
TLS role and host, `ContainerSpec.certificate`).
"""

from __future__ import annotations

import re
from typing import Any

from infra.container_run import LOG_OPTS, SCRATCH_MB
from infra.deployment import Deployment, secret_variable
from infra.model import ContainerSpec, SecretEnv

_CONFIG_NAME = re.compile(r"[^a-z0-9]+")


# Lines written above a variable in secrets.env.example where filling it needs more than a value.
ENV_NOTES = {
    "MORGAN_CORE_SERVICE_API_KEY": "# An API key whose record is in Consul KV: once Consul runs,"
    " `morgan keys create --owner morgan-core` prints one.\n",
}


def _env_with_variables(env: SecretEnv) -> str:
    return env.render({name: "${" + secret_variable(name) + "}" for name in env.secrets})


def _duration(value: str) -> str:
    return value


def _healthcheck(spec: ContainerSpec) -> dict[str, Any]:
    hc = spec.healthcheck
    return {
        "test": [part.replace("$", "$$") for part in hc.test],
        "interval": _duration(hc.interval),
        "timeout": _duration(hc.timeout),
        "retries": hc.retries,
        "start_period": _duration(hc.start_period),
    }


def config_key(spec: ContainerSpec, path: str) -> str:
    return _CONFIG_NAME.sub("-", f"{spec.name}{path}".lower()).strip("-")


def service_entry(spec: ContainerSpec, env: dict[str, str] | None = None) -> dict[str, Any]:
    """What a service entry of either file says of its container; `env` overrides the
    secret variables' `${...}` with values (a Swarm file made for `morgan deploy`)."""
    environment: dict[str, str] = {k: v.replace("$", "$$") for k, v in spec.env.items()}
    environment.update(
        {e.name: env[e.name] if env else _env_with_variables(e) for e in spec.secret_env}
    )
    service: dict[str, Any] = {
        "image": spec.image,
        "environment": environment,
        "healthcheck": _healthcheck(spec),
        "labels": dict(spec.labels),
    }
    if spec.entrypoint is not None:
        service["entrypoint"] = list(spec.entrypoint)
    if spec.command:
        service["command"] = [part.replace("$", "$$") for part in spec.command]
    volumes: list[dict[str, Any]] = [
        {"type": "volume", "source": v.name, "target": v.path, "read_only": v.read_only}
        for v in spec.volumes
    ]
    volumes += [
        {"type": "bind", "source": b.source, "target": b.path, "read_only": b.read_only}
        for b in spec.binds
    ]
    volumes += [
        {"type": "tmpfs", "target": path, "tmpfs": {"size": SCRATCH_MB * 1024 * 1024}}
        for path in spec.scratch
    ]
    if volumes:
        service["volumes"] = volumes
    if spec.privileges.cap_drop:
        service["cap_drop"] = list(spec.privileges.cap_drop)
    if spec.privileges.cap_add:
        service["cap_add"] = list(spec.privileges.cap_add)
    service["logging"] = {"driver": "json-file", "options": dict(LOG_OPTS)}
    service["stop_grace_period"] = f"{spec.stop_grace_seconds}s"
    return service


def config_mode(path: str) -> int:
    return 0o555 if path.endswith(".sh") else 0o444


def _compose_service(spec: ContainerSpec) -> dict[str, Any]:
    service = service_entry(spec)
    service["platform"] = spec.platform
    service["container_name"] = spec.name
    service["network_mode"] = "host"
    service["restart"] = "on-failure" if spec.one_shot else spec.restart
    service["mem_limit"] = f"{spec.memory_mb}m"
    if spec.tls is not None:
        volumes = service.setdefault("volumes", [])
        for kind, target in (("ca", spec.tls.ca), ("cert", spec.tls.cert), ("key", spec.tls.key)):
            volumes.append(
                {
                    "type": "bind",
                    "source": f"./tls/{spec.certificate}/{kind}.pem",
                    "target": target,
                    "read_only": True,
                }
            )
    if spec.secret_files:
        # Readable by all in the container: Docker 20.10 (Debian 12's) cannot give a
        # compose secret to the image's user (with `uid` it looks the user up on the host
        # and fails), and the services run without the capability to read root's 0400.
        service["secrets"] = [
            {"source": f.secret, "target": f.variable, "mode": 0o444} for f in spec.secret_files
        ]
    if spec.files:
        service["configs"] = [
            {"source": config_key(spec, f.path), "target": f.path, "mode": config_mode(f.path)}
            for f in spec.files
        ]
    if spec.privileges.no_new_privileges:
        service["security_opt"] = ["no-new-privileges:true"]
    if spec.gpu:
        device = {"driver": "nvidia", "device_ids": list(spec.gpu_devices), "capabilities": ["gpu"]}
        reservation = {"devices": [device]}
        service["deploy"] = {"resources": {"reservations": reservation}}
    return service


def volume_names(specs: list[ContainerSpec]) -> dict[str, Any]:
    return {v.name: {} for s in specs for v in s.volumes}


def render_compose(deployment: Deployment, host: str, kv_seed: bool = True) -> dict[str, Any]:
    """The compose document for one host: its containers, on the host's network.

    `kv_seed=False` leaves the KV seed out, for a deploy command that writes the
    entries itself (`morgan up`).
    """
    deployment.on_host(host)  # KeyError for an unknown host
    specs = list(deployment.rendered_specs(host, kv_seed=kv_seed))
    document: dict[str, Any] = {
        "name": f"morgan-{deployment.plan.config.stack}-{host}",
        "services": {s.name: _compose_service(s) for s in specs},
    }
    # `up --wait` takes a job's exit as done only when a service waits for it.
    for spec in specs:
        jobs = deployment.jobs_before(spec)
        if jobs:
            document["services"][spec.name]["depends_on"] = {
                job: {"condition": "service_completed_successfully"} for job in jobs
            }
    volumes = volume_names(specs)
    if volumes:
        document["volumes"] = volumes
    configs = {
        config_key(s, f.path): {"content": f.content.replace("$", "$$")}
        for s in specs
        for f in s.files
    }
    if configs:
        document["configs"] = configs
    # Each secret file's content is the stack's secret variable (from --env-file).
    secrets = {f.secret: {"environment": secret_variable(f.secret)}
               for s in specs for f in s.secret_files}  # fmt: skip
    if secrets:
        document["secrets"] = secrets
    return document
