"""`morgan deploy --stack S`: the deployment rolled out to every host's own Docker daemon.

Order: reach every host -> push the images to the stack's registry -> secrets and
certificates -> on each host (in parallel) pull its images and make its volumes and
models -> the start phases of the deployment (Consul servers, agents, data stores,
gateway and monitoring, services), each first removing its roles' containers the plan no
longer has on a host (a moved or renamed replica's holds the ports its successor needs),
then waiting until its containers are healthy, with the KV entries written once Consul
answers -> containers of roles the plan no longer has removed -> the stack's outputs. A
second run leaves every unchanged container alone and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.config import MorganStackConfig
from infra.container_run import container_run
from infra.deployment import Deployment, build_deployment, secret_variable
from infra.fleet import certificate_requests
from infra.model import ContainerSpec
from infra.placement import make_plan
from morgan.deploy import models as deploy_models
from morgan.deploy.containers import (
    Change,
    Prepared,
    apply,
    planned_change,
    prepare,
    remove_unplanned,
)
from morgan.deploy.engine import DeployError, DockerEngine
from morgan.deploy.node_checks import (
    CONSUL_ROLES,
    checks_before,
    servers_before,
    wait_checks_back,
    wait_servers_healthy,
)
from morgan.deploy.outputs import consul_factory, write_outputs
from morgan.deploy.pki import IssuedTls, issue
from morgan.deploy.registry import push_images
from morgan.lab import keys
from morgan.lab.polling import NotYet, PollTimeout, poll
from morgan.lab.secrets import ensure_env
from morgan.lab.stack import StackPaths

Log = Callable[[str], None]
PHASE_TIMEOUT_S = 600


@dataclass
class DeployReport:
    changes: dict[str, dict[str, Change]] = field(default_factory=dict)  # host -> name -> change
    seconds: float = 0.0

    @property
    def changed(self) -> int:
        return sum(c != "unchanged" for per in self.changes.values() for c in per.values())


def pki_dir(p: StackPaths) -> Path:
    """The stack's own CA and role certificates (not the lab's Docker-access CA)."""
    return p.state / "pki"


def engines(config: MorganStackConfig, root: Path) -> dict[str, DockerEngine]:
    return {h.name: DockerEngine.of(h, root) for h in config.hosts}


def _parallel(fn: Callable[[str], Any], hosts: list[str]) -> dict[str, Any]:
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = {h: pool.submit(fn, h) for h in hosts}
        return {h: f.result() for h, f in futures.items()}


def reach_hosts(eng: dict[str, DockerEngine], log: Log) -> None:
    def one(host: str) -> None:
        version = eng[host].text("version", "--format", "{{.Server.Version}}", timeout=60)
        log(f"{host}  {eng[host].endpoint:<28} docker {version}")

    _parallel(one, list(eng))


def _secret_values(deployment: Deployment, env: dict[str, str]) -> dict[str, str]:
    return {s.name: env[secret_variable(s.name)] for s in deployment.secrets if s.consumers}


def _tls(deployment: Deployment, p: StackPaths) -> dict[str, IssuedTls]:
    if not deployment.plan.config.security.internal_tls:
        return {}
    org = f"Morgan {deployment.plan.config.stack}"
    return {r.name: issue(pki_dir(p), r, org) for r in certificate_requests(deployment)}


def _passes_its_check(engine: DockerEngine, spec: ContainerSpec) -> bool:
    """The container's own healthcheck run now (`docker exec`), instead of waiting for
    the engine's next one: the engine checks a new container first one `interval` (15 s)
    after it starts, which a rolling deploy would otherwise wait for once per host and
    phase. The same command, so it passes exactly when the engine's would."""
    argv = spec.healthcheck.exec_argv()
    if argv is None:
        return False
    timeout = spec.healthcheck.timeout_seconds + 10
    return engine.run("exec", spec.name, *argv, check=False, timeout=timeout).returncode == 0


def _wait_healthy(engine: DockerEngine, spec: ContainerSpec) -> None:
    fmt = (
        "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}} {{.State.ExitCode}}"
    )

    def ready() -> None:
        out = engine.text("inspect", "-f", fmt, spec.name, timeout=60).split()
        status, health = out[0], out[1] if len(out) == 3 else ""
        if spec.one_shot:
            if status == "exited" and out[-1] == "0":
                return
            raise NotYet(f"{status} (exit {out[-1]})")
        if status == "running" and health in ("healthy", ""):
            return
        if status == "running" and _passes_its_check(engine, spec):
            return
        raise NotYet(f"{status} {health}".strip())

    try:
        poll(ready, what=f"{spec.host}/{spec.name}", timeout=PHASE_TIMEOUT_S, interval=2)
    except PollTimeout as exc:
        tail = engine.run("logs", "--tail", "15", spec.name, check=False, timeout=60)
        logs = (tail.stdout + tail.stderr).decode(errors="replace").strip()[-1200:]
        raise DeployError(
            f"{spec.host}: container {spec.name} did not become healthy in"
            f" {PHASE_TIMEOUT_S} s ({exc.last}). Its last log lines:\n{logs}\n"
            f"Fix the cause, then run `morgan deploy` again (it resumes where this stopped)"
        ) from None


def _consul_store(deployment: Deployment, env: dict[str, str], p: StackPaths) -> Any:
    from morgan.shared.auth import ApiKeyStore
    from morgan.shared.consul_client import ConsulClientFactory

    ep = deployment.endpoints.consul
    ca = pki_dir(p) / "ca.pem"
    factory = ConsulClientFactory(
        scheme=ep.scheme, host=ep.host, port=ep.port,
        token=env[secret_variable("consul_management_token")],
        cacert=str(ca) if ep.scheme == "https" else None,
    )  # fmt: skip
    return ApiKeyStore(factory)


def _acl(deployment: Deployment, env: dict[str, str], p: StackPaths, *, prune: bool,
         log: Log) -> None:  # fmt: skip
    """The scoped Consul tokens (infra.consul_acl): made before any container that holds
    one starts (the Consul servers run, their agents and clients do not yet); the ones
    a rotated secret replaced deleted once every container holds its new token."""
    from infra.consul_acl import acl_plan, apply_acl, prune_acl

    acl = acl_plan(deployment.plan)
    if not acl.identities:
        return
    client = _consul_store(deployment, env, p).consul.client()
    token = env[secret_variable("consul_management_token")]
    ids = {name: env[secret_variable(name)] for name in acl.secrets()}
    if prune:
        if deleted := prune_acl(client, token, acl, ids):
            log(
                f"Consul ACL: deleted {deleted} tokens the stack no longer has (replaced by a"
                " rotated secret, or of a host that left the stack)"
            )
        return
    written = apply_acl(client, token, acl, ids)
    log(f"Consul ACL: {written} scoped tokens ({', '.join(i.name for i in acl.identities)})")


def _write_kv(deployment: Deployment, env: dict[str, str], p: StackPaths, log: Log) -> None:
    store = _consul_store(deployment, env, p)

    def leader() -> None:
        if not store.consul.client().status.leader():
            raise NotYet("no Consul leader yet")

    poll(leader, what="a Consul leader", timeout=120, interval=2, errors=(Exception,))
    written = keys.write_kv(store, deployment.kv)
    log(f"wrote {written} settings to Consul KV")
    service_key = deployment.service_key
    if keys.ensure_service_key_record(store, env[service_key.variable], service_key):
        log("stored the record of core's model-service key")


@dataclass
class Staged:
    """What every engine's deploy starts from: the hosts reached, the images pushed, the
    secrets and certificates made."""

    config: MorganStackConfig
    deployment: Deployment
    engines: dict[str, DockerEngine]
    env: dict[str, str]
    secrets: dict[str, str]
    tls: dict[str, IssuedTls]
    started: float = field(default_factory=time.monotonic)

    def report(self) -> DeployReport:
        return DeployReport(changes={h: {} for h in self.engines})


def stage(config: MorganStackConfig, root: Path, p: StackPaths, log: Log,
          check: Callable[[dict[str, DockerEngine]], None] | None = None) -> Staged:  # fmt: skip
    """Reach the hosts (then `check` them), push the images, make secrets and certificates."""
    started = time.monotonic()
    deployment = build_deployment(make_plan(config), root)
    eng = engines(config, root)
    log("hosts:")
    reach_hosts(eng, log)
    if check is not None:
        check(eng)
    if config.images.registry:
        push_images(deployment, config.images.registry, log)
    env = ensure_env(p.env_file, deployment.secret_variables())
    return Staged(config, deployment, eng, env, _secret_values(deployment, env),
                  _tls(deployment, p), started)  # fmt: skip


def ready_host(staged: Staged, host: str, log: Log) -> dict[str, str]:
    """Pull the host's images from the registry, make its volumes, seed its models;
    image reference -> image id."""
    engine, registry = staged.engines[host], staged.config.images.registry
    on_host = staged.deployment.rendered_specs(host, kv_seed=False)
    ids: dict[str, str] = {}
    for image in dict.fromkeys(s.image for s in on_host):
        if registry and image.startswith(registry):
            t = time.monotonic()
            engine.run("pull", "-q", image, timeout=1800)
            log(f"{host}  pulled {image} ({time.monotonic() - t:.0f} s)")
        ids[image] = engine.text("image", "inspect", "-f", "{{.Id}}", image, timeout=60)
    for volume in dict.fromkeys(v.name for s in on_host for v in s.volumes):
        engine.run("volume", "create", volume, timeout=60)
    seeded = deploy_models.seed_host_models(engine, staged.deployment, host)
    if seeded:
        log(f"{host}  tiny test models in the model volume ({', '.join(seeded)})")
    log(f"{host}  {len(ids)} images ready, {len(on_host)} containers planned")
    return ids


def run_phases(staged: Staged, p: StackPaths, log: Log,
               start: Callable[[int, list[ContainerSpec]], None]) -> None:  # fmt: skip
    """The deployment's start phases in order, `start(index, specs)` each; the scoped
    Consul tokens are made once the servers run (after phase 1), the KV entries written
    once the agents answer (after phase 2), replaced tokens deleted at the end."""
    deployment = staged.deployment
    by_name = {s.name: s for s in deployment.specs}
    for index, phase in enumerate(deployment.start_order):
        specs = [by_name[name] for name in phase]
        roles = ", ".join(dict.fromkeys(s.role for s in specs))
        log(f"phase {index + 1}/{len(deployment.start_order)}: {roles}")
        start(index, specs)
        if index == 0:
            _acl(deployment, staged.env, p, prune=False, log=log)
        if index == 1 or (index == 0 and len(deployment.start_order) == 1):
            _write_kv(deployment, staged.env, p, log)
    _acl(deployment, staged.env, p, prune=True, log=log)


def swarm_tasks_on(engine: DockerEngine, stack: str) -> int:
    """How many containers of the stack's Swarm services run on this host."""
    out = engine.text("ps", "-q", "--filter", f"label=com.docker.stack.namespace={stack}",
                      timeout=60)  # fmt: skip
    return len(out.split())


def _no_swarm_services(config: MorganStackConfig) -> Callable[[dict[str, DockerEngine]], None]:
    def check(eng: dict[str, DockerEngine]) -> None:
        stack = swarm_stack_name(config.stack)
        for host, engine in eng.items():
            if n := swarm_tasks_on(engine, stack):
                raise DeployError(
                    f"{host} runs {n} containers of stack {config.stack!r} as Swarm services;"
                    f" keep deploying with `morgan deploy --stack {config.stack} --engine"
                    f" swarm`, or remove them first (`docker stack rm {stack}` on a manager)"
                )

    return check


def deploy(config: MorganStackConfig, root: Path, p: StackPaths, log: Log) -> DeployReport:
    staged = stage(config, root, p, log, check=_no_swarm_services(config))
    deployment, eng = staged.deployment, staged.engines
    report = staged.report()

    def prepare_host(host: str) -> dict[str, Prepared]:
        ids = ready_host(staged, host, log)
        return {
            s.name: prepare(container_run(s), staged.secrets, staged.tls.get(s.certificate or ""),
                            ids[s.image])
            for s in deployment.rendered_specs(host, kv_seed=False)
        }  # fmt: skip

    log("images, volumes and models on each host:")
    prepared: dict[str, dict[str, Prepared]] = _parallel(prepare_host, list(eng))

    def tidy(host: str, roles: set[str] | None) -> None:
        planned = {s.name for s in deployment.rendered_specs(host, kv_seed=False)}
        for name in remove_unplanned(eng[host], config.stack, planned, roles):
            report.changes[host][name] = "removed"
            log(f"{host}  {name:<34} removed (no longer planned here; its volumes are kept)")

    def start(_index: int, specs: list[ContainerSpec]) -> None:
        # First the phase's roles' containers the plan no longer has on a host: a moved or
        # renamed replica's old container holds the host ports its successor needs.
        roles = {s.role for s in specs}
        _parallel(lambda host: tidy(host, roles), list(eng))
        hosts = list(dict.fromkeys(s.host for s in specs))
        rolling = {
            s.name for s in specs
            if planned_change(eng[s.host], prepared[s.host][s.name]) == "replaced"
        }  # fmt: skip
        # A host whose Consul container is replaced: the checks that pass on it now.
        agents = {s.host for s in specs if s.name in rolling and s.role in CONSUL_ROLES}
        consul = _consul_store(deployment, staged.env, p).consul.client() if agents else None
        passing = {host: checks_before(consul, host, log) for host in agents}
        servers = servers_before(consul, log) if consul is not None else 0

        def run_on(host: str, names: set[str], *, rolling_over: bool = False) -> None:
            mine = [s for s in specs if s.host == host and s.name in names]
            for spec in mine:
                change = apply(eng[host], prepared[host][spec.name])
                report.changes[host][spec.name] = change
                log(f"{host}  {spec.name:<34} {change}")
            for spec in mine:
                _wait_healthy(eng[host], spec)
            if not rolling_over or consul is None:
                return
            # This host's part of Consul whole again before the next host's goes.
            if servers and any(s.role == "consul-server" for s in mine):
                wait_servers_healthy(consul, servers)
            if passing.get(host) and any(s.role in CONSUL_ROLES for s in mine):
                wait_checks_back(consul, host, passing[host])

        # New and unchanged containers: every host at once.
        fresh = {s.name for s in specs} - rolling
        _parallel(lambda host: run_on(host, fresh), hosts)
        # Running containers that change: one host at a time, each healthy before the next
        # host's go, so that a role with replicas on several hosts keeps serving (Consul
        # keeps its quorum, core answers through the gateway) while it is updated.
        for host in hosts:
            run_on(host, rolling, rolling_over=True)

    run_phases(staged, p, log, start)
    _parallel(lambda host: tidy(host, None), list(eng))  # roles the plan no longer has
    path = write_outputs(deployment, staged.env, staged.tls, p)
    log(f"outputs written to {path}")
    report.seconds = time.monotonic() - staged.started
    return report


def swarm_stack_name(stack: str) -> str:
    """The Swarm stack of `morgan deploy --engine swarm`."""
    return f"morgan-{stack}"


def api_key_for(config: MorganStackConfig, outputs: dict[str, Any], ca_file: Path,
                owner: str, scopes: Sequence[str] = ("user",)) -> str:  # fmt: skip
    """A new API key of a deployed stack, made through its Consul API (`morgan keys create`)."""
    from morgan.shared.auth import ApiKeyStore

    store = ApiKeyStore(consul_factory(outputs, ca_file))
    return keys.create_api_key(store, owner=owner, scopes=scopes)
