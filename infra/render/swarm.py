"""docker-stack.yml: one Swarm service per replica, pinned to its host by node label.

The services run on the host's network (Swarm's routing mesh needs IPVS, and nothing
of Morgan's uses it: every port is the host's own, as with the other engines). Files
and TLS material reach the tasks as Swarm configs and secrets, never as bind mounts
of paths that would have to exist on every node: each plan file is a config, each
certificate and the CA a config, each private key and each secret file a secret. Every
object's name ends in a hash of what it holds, because Swarm objects cannot change: new
content, new name, and the service rolls to it.

Two uses: `morgan render` writes the file for `docker stack deploy` with each
object's `file:` next to it; `morgan deploy --engine swarm` creates the objects
itself and renders the file with them as `external`, the secrets' values filled in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from infra.container_run import OWNER_ONLY
from infra.deployment import Deployment
from infra.model import ContainerSpec
from infra.render.compose import config_key, config_mode, service_entry, volume_names

# The compose file format `docker stack deploy` of Docker 20.10 reads (it needs one).
FILE_VERSION = "3.8"
HOST_NETWORK = "hostnet"
# Swarm refuses config and secret names longer than this.
NAME_MAX = 64
TLS_KINDS: tuple[Literal["ca", "cert", "key"], ...] = ("ca", "cert", "key")


@dataclass(frozen=True)
class SwarmObject:
    """A config or secret of the stack: `key` in the file, held at `source` beside it."""

    key: str
    kind: Literal["config", "secret"]
    source: str
    content: str | None = None  # plan files; TLS material comes from the stack's CA
    tls: tuple[str, Literal["ca", "cert", "key"]] | None = None  # (certificate, kind)
    secret: str | None = None  # the stack's secret of that name (a SecretFile's)

    def name(self, content: str) -> str:
        """The object's name in the swarm: its key and a hash of its content, within
        Swarm's 64 characters."""
        digest = hashlib.sha256(content.encode()).hexdigest()[:10]
        return f"{self.key[: NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}"


@dataclass(frozen=True)
class Mounted:
    """Where a task gets an object: target path, file mode, owner (uid, gid; root's when
    None)."""

    target: str
    mode: int
    owner: tuple[int, int] | None = None

    def ref(self, key: str) -> dict[str, Any]:
        ref: dict[str, Any] = {"source": key, "target": self.target, "mode": self.mode}
        if self.owner is not None:
            ref["uid"], ref["gid"] = (str(i) for i in self.owner)
        return ref


def _private(target: str, spec: ContainerSpec) -> Mounted:
    """A key or a secret, as the other engines' uploads: its user's alone where the plan
    knows the user, else readable by the image's own (non-root) user."""
    if spec.runs_as is None:
        return Mounted(target, 0o444)
    return Mounted(target, OWNER_ONLY, spec.runs_as)


def _tls_objects(spec: ContainerSpec) -> list[tuple[SwarmObject, Mounted]]:
    if spec.tls is None or spec.certificate is None:
        return []
    out = []
    for kind, target in zip(TLS_KINDS, (spec.tls.ca, spec.tls.cert, spec.tls.key), strict=True):
        key = "tls-ca" if kind == "ca" else f"tls-{spec.certificate}-{kind}"
        source = "./tls/ca.pem" if kind == "ca" else f"./tls/{spec.certificate}/{kind}.pem"
        obj = SwarmObject(key, "secret" if kind == "key" else "config", source,
                          tls=(spec.certificate, kind))  # fmt: skip
        out.append((obj, _private(target, spec) if kind == "key" else Mounted(target, 0o444)))
    return out


def objects_of(spec: ContainerSpec) -> list[tuple[SwarmObject, Mounted]]:
    """(object, where the task gets it) for each file the task gets."""
    files = [
        (SwarmObject(config_key(spec, f.path), "config", f"./configs/{config_key(spec, f.path)}",
                     content=f.content), Mounted(f.path, config_mode(f.path)))
        for f in spec.files
    ]  # fmt: skip
    secrets = [
        (SwarmObject(f"secret-{f.secret}", "secret", f"./secrets/{f.secret}", secret=f.secret),
         _private(f.path, spec))
        for f in spec.secret_files
    ]  # fmt: skip
    return files + _tls_objects(spec) + secrets


def stack_objects(specs: Iterable[ContainerSpec]) -> dict[str, SwarmObject]:
    return {obj.key: obj for spec in specs for obj, _ in objects_of(spec)}


def _swarm_service(spec: ContainerSpec, env: dict[str, str] | None) -> dict[str, Any]:
    service = service_entry(spec, env)
    service["networks"] = [HOST_NETWORK]
    for kind in ("config", "secret"):
        refs = [mounted.ref(obj.key) for obj, mounted in objects_of(spec) if obj.kind == kind]
        if refs:
            service[f"{kind}s"] = refs
    deploy: dict[str, Any] = {
        "mode": "replicated",
        "replicas": 1,
        "placement": {"constraints": [f"node.labels.morgan.host == {spec.host}"]},
        "resources": {"limits": {"memory": f"{spec.memory_mb}M"}},
    }
    if spec.gpu:
        # Swarm has no device requests: GPU nodes advertise NVIDIA-GPU as a generic resource
        # (daemon.json "node-generic-resources", see docs/infrastructure.md); the task
        # reserves as many as the plan gives it. Swarm ignores security_opt, so a Swarm
        # task keeps no-new-privileges off; cap_drop (service_entry) it does honour.
        gpus = {"kind": "NVIDIA-GPU", "value": len(spec.gpu_devices)}
        deploy["resources"]["reservations"] = {
            "generic_resources": [{"discrete_resource_spec": gpus}]
        }
    if spec.one_shot:
        deploy["restart_policy"] = {"condition": "on-failure", "max_attempts": 10, "delay": "10s"}
    else:
        deploy["restart_policy"] = {"condition": "any", "delay": "5s"}
        deploy["update_config"] = {
            "parallelism": 1,
            "delay": "10s",
            # stop-first: the new task needs the host ports the old one holds.
            "order": "stop-first",
            "failure_action": "rollback",
            "monitor": "60s",
        }
        deploy["rollback_config"] = {"parallelism": 1, "order": "stop-first"}
    service["deploy"] = deploy
    return service


def render_swarm(
    deployment: Deployment,
    *,
    kv_seed: bool = True,
    only: Iterable[str] | None = None,
    external: Mapping[str, str] | None = None,
    env: Mapping[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The stack file. Label the nodes first (`Deployment.node_labels`: morgan.host, gpu,
    os, arch, cuda).

    `only` keeps those services (a phase of `morgan deploy`); `external` names each
    object already in the swarm (key -> name), else each is read from its `file:`;
    `env` gives each service's secret variables their values (name -> var -> value,
    `$` already doubled), else they stay `${MORGAN_...}` for the CLI to fill.
    """
    keep = set(only) if only is not None else None
    specs = [s for s in deployment.rendered_specs(kv_seed=kv_seed)
             if keep is None or s.name in keep]  # fmt: skip
    document: dict[str, Any] = {
        "version": FILE_VERSION,
        "services": {s.name: _swarm_service(s, env.get(s.name) if env else None) for s in specs},
        "networks": {HOST_NETWORK: {"external": True, "name": "host"}},
    }
    # Volumes keep the plan's names (not prefixed with the stack's), as the other engines'.
    volumes = {name: {"name": name} for name in volume_names(specs)}
    if volumes:
        document["volumes"] = volumes
    for kind in ("config", "secret"):
        objs = {k: o for k, o in stack_objects(specs).items() if o.kind == kind}
        if not objs:
            continue
        if external is not None:
            document[f"{kind}s"] = {k: {"external": True, "name": external[k]} for k in objs}
        else:
            document[f"{kind}s"] = {
                # TLS material is the operator's: named by its key (not the stack's prefix).
                k: {"file": o.source, "name": o.name(o.content) if o.content else k[:NAME_MAX]}
                for k, o in objs.items()
            }
    return document


def swarm_config_files(deployment: Deployment) -> dict[str, str]:
    """Relative path -> content of the plan's files docker-stack.yml refers to (the TLS
    files under ./tls/ come from the stack's CA)."""
    return {
        obj.source.removeprefix("./"): obj.content
        for obj in stack_objects(deployment.rendered_specs()).values()
        if obj.content is not None
    }
