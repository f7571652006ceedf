"""Render the deployment as per-host compose files and one Swarm stack file.

Both read the same `Deployment` as the Pulumi program, plus its one-shot KV seed
(Pulumi writes the KV entries itself). Secrets never appear in the files: they are
`${MORGAN_...}` variables (`Deployment.secret_variables`), and TLS material is
mounted from `./tls/<role>/` next to the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

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


def _config_key(spec: ContainerSpec, path: str) -> str:
    return _CONFIG_NAME.sub("-", f"{spec.name}{path}".lower()).strip("-")


def _service(spec: ContainerSpec, *, swarm: bool) -> dict[str, Any]:
    env: dict[str, str] = {k: v.replace("$", "$$") for k, v in spec.env.items()}
    env.update({e.name: _env_with_variables(e) for e in spec.secret_env})
    service: dict[str, Any] = {
        "image": spec.image,
        "environment": env,
        "healthcheck": _healthcheck(spec),
        "labels": dict(spec.labels),
    }
    if not swarm:
        service["platform"] = spec.platform
        service["container_name"] = spec.name
        service["network_mode"] = "host"
        service["restart"] = "on-failure" if spec.one_shot else spec.restart
        service["mem_limit"] = f"{spec.memory_mb}m"
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
    if spec.tls is not None:
        for kind, target in (("ca", spec.tls.ca), ("cert", spec.tls.cert), ("key", spec.tls.key)):
            volumes.append(
                {
                    "type": "bind",
                    "source": f"./tls/{spec.tls.role}/{kind}.pem",
                    "target": target,
                    "read_only": True,
                }
            )
    if volumes:
        service["volumes"] = volumes
    if spec.files:
        service["configs"] = [
            {
                "source": _config_key(spec, f.path),
                "target": f.path,
                "mode": 0o555 if f.path.endswith(".sh") else 0o444,
            }
            for f in spec.files
        ]
    if spec.gpu:
        reservation = {"devices": [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]}
        service.setdefault("deploy", {})["resources"] = {"reservations": reservation}
    return service


def _volumes(specs: list[ContainerSpec]) -> dict[str, Any]:
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
        "services": {s.name: _service(s, swarm=False) for s in specs},
    }
    volumes = _volumes(specs)
    if volumes:
        document["volumes"] = volumes
    configs = {
        _config_key(s, f.path): {"content": f.content.replace("$", "$$")}
        for s in specs
        for f in s.files
    }
    if configs:
        document["configs"] = configs
    return document


def _swarm_service(spec: ContainerSpec) -> dict[str, Any]:
    service = _service(spec, swarm=True)
    service["networks"] = ["hostnet"]
    deploy = service.setdefault("deploy", {})
    deploy["mode"] = "replicated"
    deploy["replicas"] = 1
    deploy["placement"] = {"constraints": [f"node.labels.morgan.host == {spec.host}"]}
    resources = deploy.setdefault("resources", {})
    resources["limits"] = {"memory": f"{spec.memory_mb}M"}
    if spec.gpu:
        # Swarm has no device requests: GPU nodes advertise NVIDIA-GPU as a generic resource
        # (daemon.json "node-generic-resources", see docs/infrastructure.md).
        resources["reservations"] = {
            "generic_resources": [{"discrete_resource_spec": {"kind": "NVIDIA-GPU", "value": 1}}]
        }
    if spec.one_shot:
        deploy["restart_policy"] = {"condition": "on-failure", "max_attempts": 10, "delay": "10s"}
    else:
        deploy["restart_policy"] = {"condition": "any", "delay": "5s"}
        deploy["update_config"] = {
            "parallelism": 1,
            "delay": "10s",
            "order": "stop-first",
            "failure_action": "rollback",
            "monitor": "60s",
        }
        deploy["rollback_config"] = {"parallelism": 1, "order": "stop-first"}
    return service


def render_swarm(deployment: Deployment) -> dict[str, Any]:
    """docker-stack.yml: one Swarm service per replica, pinned by node label morgan.host.

    Label the nodes first (docs/infrastructure.md): `docker node update --label-add
    morgan.host=h1 <node>`, plus gpu/os/arch labels from the stack's hosts.
    """
    specs = list(deployment.rendered_specs())
    document: dict[str, Any] = {
        "services": {s.name: _swarm_service(s) for s in specs},
        "networks": {"hostnet": {"external": True, "name": "host"}},
    }
    volumes = _volumes(specs)
    if volumes:
        document["volumes"] = volumes
    configs = {
        _config_key(s, f.path): {"file": f"./configs/{_config_key(s, f.path)}"}
        for s in specs
        for f in s.files
    }
    if configs:
        document["configs"] = configs
    return document


def swarm_config_files(deployment: Deployment) -> dict[str, str]:
    """Relative path → content of the config files docker-stack.yml refers to."""
    return {
        f"configs/{_config_key(s, f.path)}": f.content
        for s in deployment.rendered_specs()
        for f in s.files
    }


def write_renderings(deployment: Deployment, out_dir: str | Path) -> list[Path]:
    """Write docker-stack.yml, its configs, and compose-<host>.yml for every host."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    stack = out / "docker-stack.yml"
    stack.write_text(yaml.safe_dump(render_swarm(deployment), sort_keys=False))
    written.append(stack)
    for rel, content in swarm_config_files(deployment).items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for host in deployment.hosts:
        path = out / f"compose-{host}.yml"
        path.write_text(yaml.safe_dump(render_compose(deployment, host), sort_keys=False))
        written.append(path)
    env_example = out / "secrets.env.example"
    env_example.write_text(
        "# Fill these (e.g. from `pulumi stack output --show-secrets`) and pass with --env-file.\n"
        + "".join(f"{ENV_NOTES.get(name, '')}{name}=\n" for name in deployment.secret_variables())
    )
    written.append(env_example)
    return written
