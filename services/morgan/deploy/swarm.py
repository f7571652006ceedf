"""`morgan deploy --stack S --engine swarm`: the same deployment as Swarm services.

The hosts form one swarm (`swarm init` on the first host, the other Consul server hosts
join as managers so that the swarm keeps a quorum when one is lost, the rest as
workers), each node labelled from the plan (morgan.host, os, arch, gpu, cuda); the
plan's files and certificates become Swarm configs and secrets; then each start phase
is one `docker stack deploy` of that phase's services (infra/render/swarm.py, the file
`morgan render` writes, with the objects as `external` and the secrets' values filled
in), waiting until each service's task runs healthy on its host. Host networking and
host ports throughout: this kernel has no IPVS, so no routing mesh and no VIPs, and
nothing needs them.

Containers that `morgan deploy` made with the plain engine are removed phase by phase
just before their service starts (they hold the same host ports).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import yaml

from infra.config import MorganStackConfig
from infra.deployment import Deployment
from infra.model import ContainerSpec
from infra.render.swarm import SwarmObject, render_swarm, stack_objects
from infra.spec_common import is_ip
from morgan.deploy.containers import Change, current_state
from morgan.deploy.engine import DeployError, DockerEngine
from morgan.deploy.outputs import write_outputs
from morgan.deploy.rollout import (
    PHASE_TIMEOUT_S,
    DeployReport,
    Log,
    Staged,
    _parallel,
    ready_host,
    run_phases,
    stage,
    swarm_stack_name,
)
from morgan.lab.polling import NotYet, PollTimeout, poll
from morgan.lab.stack import StackPaths

OBJECT_LABEL = "org.morgan.stack"


def _node(engine: DockerEngine) -> tuple[str, str, bool]:
    """(local node state, node id, is a manager) of the host's daemon."""
    fmt = "{{.Swarm.LocalNodeState}} {{.Swarm.NodeID}} {{.Swarm.ControlAvailable}}"
    fields = engine.text("info", "--format", fmt, timeout=60).split()
    state, node_id, manager = [*fields, "", ""][:3]
    return state, node_id, manager == "true"


def _advertise(address: str) -> list[str]:
    # Swarm takes an IP or an interface; with a host name it picks the node's own address.
    return ["--advertise-addr", address] if is_ip(address) else []


def form_swarm(staged: Staged, log: Log) -> str:
    """The swarm of the stack's hosts, its nodes labelled; returns the first manager."""
    config, eng = staged.config, staged.engines
    servers = [s.host for s in staged.deployment.of_role("consul-server")]
    first = servers[0] if servers else config.hosts[0].name
    managers = set(servers) or {first}
    state, _, is_manager = _node(eng[first])
    if state == "inactive":
        eng[first].run("swarm", "init", *_advertise(config.host(first).address), timeout=120)
        log(f"{first}  swarm initialised (manager)")
    elif not is_manager:
        raise DeployError(
            f"{first}: its daemon is in a swarm but not a manager; run"
            f" `docker swarm leave` on {first} (or promote it) and deploy again"
        )
    tokens = {
        kind: eng[first].text("swarm", "join-token", "-q", kind, timeout=60)
        for kind in ("manager", "worker")
    }
    manager_addr = f"{config.host(first).address}:2377"

    def join(host: str) -> None:
        if host == first or _node(eng[host])[0] != "inactive":
            return
        kind = "manager" if host in managers else "worker"
        # The join token is on this command line (docker takes it no other way); it is
        # good for joining only and rotates with `docker swarm join-token --rotate`.
        advertise = _advertise(config.host(host).address)
        eng[host].run("swarm", "join", "--token", tokens[kind], *advertise, manager_addr,
                      timeout=120)  # fmt: skip
        log(f"{host}  joined the swarm ({kind})")

    _parallel(join, [h.name for h in config.hosts])
    for host in config.hosts:
        _, node_id, _ = _node(eng[host.name])
        labels = staged.deployment.node_labels[host.name]
        args = [a for k, v in sorted(labels.items()) for a in ("--label-add", f"{k}={v}")]
        eng[first].run("node", "update", *args, node_id, timeout=60)
    log(f"{len(config.hosts)} nodes labelled ({', '.join(sorted(managers))} managers)")
    return first


def _content(obj: SwarmObject, staged: Staged) -> str:
    if obj.content is not None:
        return obj.content
    if obj.secret is not None:
        return staged.secrets[obj.secret]
    assert obj.tls is not None
    certificate, kind = obj.tls
    return staged.tls[certificate].content(kind)


def create_objects(staged: Staged, manager: DockerEngine, stack: str, log: Log) -> dict[str, str]:
    """Every config and secret of the stack in the swarm; key -> name. Objects are
    immutable, so new content gets a new name (its hash) and the old one stays until no
    service uses it."""
    existing = {
        kind: set(manager.text(kind, "ls", "--format", "{{.Name}}", timeout=60).split())
        for kind in ("config", "secret")
    }
    names, made = {}, 0
    for key, obj in stack_objects(staged.deployment.specs).items():
        content = _content(obj, staged)
        name = obj.name(content)
        if name not in existing[obj.kind]:
            manager.run(obj.kind, "create", "--label", f"{OBJECT_LABEL}={stack}", name, "-",
                        stdin=content.encode(), timeout=60)  # fmt: skip
            made += 1
        names[key] = name
    log(f"{len(names)} configs and secrets in the swarm ({made} new)")
    return names


def prune_objects(manager: DockerEngine, stack: str, keep: set[str]) -> int:
    """Remove the stack's configs and secrets that no longer have a use; in-use ones stay."""
    removed = 0
    for kind in ("config", "secret"):
        listed = manager.text(kind, "ls", "--filter", f"label={OBJECT_LABEL}={stack}",
                              "--format", "{{.Name}}", timeout=60).split()  # fmt: skip
        for name in set(listed) - keep:
            removed += manager.run(kind, "rm", name, check=False, timeout=60).returncode == 0
    return removed


def remove_unplanned_services(manager: DockerEngine, stack: str,
                              deployment: Deployment) -> list[tuple[str, str]]:  # fmt: skip
    """Remove the stack's Swarm services the plan no longer has (each phase's `docker stack
    deploy` cannot prune: it names only that phase's services); (host, service) each."""
    planned = {f"{stack}_{s.name}" for s in deployment.specs}
    listed = manager.text("service", "ls", "--filter", f"label=com.docker.stack.namespace={stack}",
                          "--format", "{{.Name}}", timeout=60).split()  # fmt: skip
    removed = []
    for service in sorted(set(listed) - planned):
        fmt = '{{index .Spec.TaskTemplate.ContainerSpec.Labels "morgan.host"}}'
        host = manager.text("service", "inspect", "--format", fmt, service, timeout=60)
        manager.run("service", "rm", service, timeout=120)
        removed.append((host or "?", service))
    return removed


def _env_values(spec: ContainerSpec, secrets: dict[str, str]) -> dict[str, str]:
    # `$` doubled: the stack file is interpolated by `docker stack deploy`.
    return {e.name: e.render(secrets).replace("$", "$$") for e in spec.secret_env}


def _spec_digest(manager: DockerEngine, service: str) -> str | None:
    proc = manager.run("service", "inspect", "--format", "{{json .Spec}}", service,
                       check=False, timeout=60)  # fmt: skip
    if proc.returncode != 0:
        return None
    spec = json.loads(proc.stdout)
    spec.pop("UpdateConfig", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _wait_tasks(manager: DockerEngine, stack: str, specs: list[ContainerSpec]) -> None:
    """Wait until every service of a phase runs on its planned host (a one-shot one: has
    completed). One `docker service ps` per try for the whole phase: one per service, in
    parallel, opened as many SSH sessions at once as the phase has services, and sshd
    refuses those past its MaxStartups (10 by default)."""
    waiting = {f"{stack}_{s.name}": s for s in specs}
    fmt = "{{.Name}}|{{.Node}}|{{.DesiredState}}|{{.CurrentState}}|{{.Error}}"

    def settled() -> None:
        rows = manager.text("service", "ps", "--no-trunc", "--format", fmt, *sorted(waiting),
                            timeout=60).splitlines()  # fmt: skip
        # Tasks come sorted by name (`<service>.<slot>`), the newest of a slot first.
        newest: dict[str, list[str]] = {}
        for row in rows:
            name, *fields = [*row.split("|"), "", "", "", ""][:5]
            newest.setdefault(name.rsplit(".", 1)[0], fields)
        not_yet = []
        for service, spec in list(waiting.items()):
            node, desired, current, error = newest.get(service, ["", "", "", ""])
            state = current.split()[0] if current else ""
            if spec.one_shot and state == "Complete":
                del waiting[service]
                continue
            if not spec.one_shot and desired == "Running" and state == "Running":
                if node != spec.host:
                    raise DeployError(f"{service} runs on {node}, not on {spec.host}: node labels?")
                del waiting[service]
                continue
            not_yet.append(f"{service}: {node} {current} {error}".strip())
        if not_yet:
            raise NotYet("; ".join(not_yet))

    try:
        poll(settled, what=f"{len(specs)} Swarm services", timeout=PHASE_TIMEOUT_S, interval=2)
    except PollTimeout as exc:
        names = ", ".join(sorted(waiting))
        raise DeployError(
            f"Swarm services {names} did not run healthy in {PHASE_TIMEOUT_S} s ({exc.last})."
            " Their logs: `docker service logs <service>` on a manager; fix the cause, then"
            " run `morgan deploy --engine swarm` again"
        ) from None


def deploy_swarm(config: MorganStackConfig, root: Path, p: StackPaths, log: Log) -> DeployReport:
    staged = stage(config, root, p, log)
    deployment, eng = staged.deployment, staged.engines
    stack = swarm_stack_name(config.stack)
    report = staged.report()
    log("images, volumes and models on each host:")
    _parallel(lambda host: ready_host(staged, host, log), list(eng))
    log("the swarm:")
    first = form_swarm(staged, log)
    manager = eng[first]
    external = create_objects(staged, manager, stack, log)
    env = {s.name: _env_values(s, staged.secrets) for s in deployment.specs}

    def start(_index: int, specs: list[ContainerSpec]) -> None:
        for spec in specs:
            if current_state(eng[spec.host], spec.name) is not None:
                eng[spec.host].run("rm", "-f", "-v", spec.name, timeout=120)
                log(f"{spec.host}  {spec.name:<34} plain container removed for its service")
        before = {s.name: _spec_digest(manager, f"{stack}_{s.name}") for s in specs}
        document = render_swarm(deployment, kv_seed=False, only=[s.name for s in specs],
                                external=external, env=env)  # fmt: skip
        stdin = yaml.safe_dump(document, sort_keys=False).encode()
        manager.run("stack", "deploy", "--compose-file", "-", stack, stdin=stdin, timeout=300)
        for spec in specs:
            after = _spec_digest(manager, f"{stack}_{spec.name}")
            old = before[spec.name]
            change: Change = (
                "created" if old is None else "unchanged" if old == after else "replaced"
            )
            report.changes[spec.host][spec.name] = change
            log(f"{spec.host}  {spec.name:<34} {change}")
        _wait_tasks(manager, stack, specs)

    run_phases(staged, p, log, start)
    for host, service in remove_unplanned_services(manager, stack, deployment):
        report.changes.setdefault(host, {})[service.removeprefix(f"{stack}_")] = "removed"
        log(f"{host}  {service:<34} removed (no longer planned; its volumes are kept)")
    removed = prune_objects(manager, stack, set(external.values()))
    if removed:
        log(f"removed {removed} configs and secrets no service uses any more")
    path = write_outputs(deployment, staged.env, staged.tls, p)
    log(f"outputs written to {path}")
    report.seconds = time.monotonic() - staged.started
    return report
