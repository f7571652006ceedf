"""`morgan status` for a deployed fleet: per host, each planned container's state and Docker
health, its service's health in Consul, and for Morgan's services the request rate, 5xx
rate and p95 latency of the last 5 minutes from Prometheus.

Each source is asked once for the whole fleet (every host's daemon in parallel, Consul's
health of every service, three Prometheus queries, three more for the hosts' CPU, memory and
disk where node-exporter runs); a source that does not answer becomes
a warning line and `-` in its columns, never a crash: a status is most wanted when
something is down.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from infra.configs import consul as consul_cfg
from infra.configs.alerting import DURATION, REQUESTS, disk_used_ratio
from infra.configs.observability import PORTS
from infra.deployment import Deployment
from infra.model import ContainerSpec
from morgan.catalog import SERVICE_PORTS
from morgan.deploy.engine import DeployError, DockerEngine
from morgan.deploy.outputs import monitoring_auth
from morgan.deploy.rollout import swarm_stack_name

WINDOW = "5m"
# Worst first: a service is as healthy as its worst check.
CONSUL_ORDER = ("critical", "warning", "passing")
# By the target labels both discovery modes give (Consul's and the static targets'): the
# service's Consul name and its host. Two replicas on one host share their numbers.
QUERIES = {
    "requests_per_s": f"sum by (service, host) (rate({REQUESTS}[{WINDOW}]))",
    "errors_per_s": f'sum by (service, host) (rate({REQUESTS}{{status=~"5.."}}[{WINDOW}]))',
    "p95_ms": "1000 * histogram_quantile(0.95, sum by (service, host, le)"
    f" (rate({DURATION}[{WINDOW}])))",
}
# Per host, from node-exporter (where the stack runs it): busy CPU, memory in use and the
# use of its fullest disk (the one MorganDiskFilling would name first), in percent.
HOST_QUERIES = {
    "cpu_percent": "100 * (1 - avg by (host)"
    f' (rate(node_cpu_seconds_total{{job="node",mode="idle"}}[{WINDOW}])))',
    "memory_percent": '100 * (1 - node_memory_MemAvailable_bytes{job="node"}'
    ' / node_memory_MemTotal_bytes{job="node"})',
    "disk_percent": f"max by (host) (100 * {disk_used_ratio()})",
}


@dataclass(frozen=True)
class ContainerStatus:
    name: str
    role: str
    state: str  # running, exited, … or "missing"
    health: str  # Docker's: healthy, unhealthy, starting, or "-" without a healthcheck
    consul: str  # the service's worst check in Consul, or "-" where none is registered
    numbers: dict[str, float]  # QUERIES' names -> value, for Morgan's services (per host)

    @property
    def ok(self) -> bool:
        return (
            self.state == "running"
            and self.health in ("healthy", "-")
            and (self.consul in ("passing", "-"))
        )


@dataclass(frozen=True)
class HostStatus:
    name: str
    endpoint: str
    error: str  # why the daemon did not answer; "" when it did
    containers: tuple[ContainerStatus, ...]
    numbers: dict[str, float]  # HOST_QUERIES' names -> value; empty without node-exporter

    @property
    def ok(self) -> bool:
        return not self.error and all(c.ok for c in self.containers)


@dataclass(frozen=True)
class FleetStatus:
    hosts: tuple[HostStatus, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)


def consul_service(spec: ContainerSpec) -> tuple[str, int] | None:
    """The (Consul name, port) a container's service is registered under, if any."""
    if spec.role in SERVICE_PORTS and spec.ports:
        return f"morgan-{spec.role}", spec.ports[0].number
    port = consul_cfg.SUPPORT_SERVICES.get(spec.role)
    return (spec.role, port) if port is not None else None


def _containers(engine: DockerEngine, stack: str) -> dict[str, tuple[str, str]]:
    """Planned name -> (state, health) of every container on a host, newest first wins
    (a Swarm task carries its service's name, `<swarm stack>_<name>`)."""
    fmt = '{{.Names}}|{{.Label "com.docker.swarm.service.name"}}|{{.State}}|{{.Status}}'
    found: dict[str, tuple[str, str]] = {}
    for row in engine.text("ps", "-a", "--format", fmt, timeout=60).splitlines():
        name, service, state, status = [*row.split("|"), "", "", ""][:4]
        planned = service.removeprefix(f"{swarm_stack_name(stack)}_") if service else name
        health = next((h for h in ("healthy", "unhealthy", "starting") if f"({h}" in status),
                      "-")  # fmt: skip
        found.setdefault(planned, (state, health))
    return found


def _consul_health(outputs: dict[str, Any], ca_file: Path, names: set[str]
                   ) -> dict[tuple[str, str, int], str]:  # fmt: skip
    """(node, service name, port) -> worst check status, from a server's API."""
    base = outputs["consul_ui_url"].removesuffix("/ui/")
    headers = {"X-Consul-Token": outputs["consul_management_token"]}
    found: dict[tuple[str, str, int], str] = {}
    with httpx.Client(base_url=base, verify=str(ca_file), headers=headers, timeout=10) as api:
        for name in sorted(names):
            answer = api.get(f"/v1/health/service/{name}")
            answer.raise_for_status()
            for entry in answer.json():
                statuses = {c["Status"] for c in entry["Checks"]}
                worst = next((s for s in CONSUL_ORDER if s in statuses), "passing")
                found[(entry["Node"]["Node"], name, entry["Service"]["Port"])] = worst
    return found


def _prometheus_numbers(
    deployment: Deployment,
    ca_file: Path,
    auth: tuple[str, str],
    queries: dict[str, str],
    by: tuple[str, ...],
) -> dict[tuple[str, ...], dict[str, float]]:
    """The `by` labels' values -> `queries`' names -> value."""
    host = deployment.plan.hosts_of("prometheus")[0]
    address = deployment.plan.config.host(host).address
    numbers: dict[tuple[str, ...], dict[str, float]] = {}
    url = f"https://{address}:{PORTS['prometheus']}/api/v1/query"
    with httpx.Client(verify=str(ca_file), auth=auth, timeout=10) as api:
        for key, query in queries.items():
            answer = api.get(url, params={"query": query})
            answer.raise_for_status()
            for sample in answer.json()["data"]["result"]:
                value = float(sample["value"][1])
                labels = sample["metric"]
                if value == value:  # NaN: no requests in the window
                    numbers.setdefault(tuple(labels[b] for b in by), {})[key] = value
    return numbers


def _attempt(what: str, warnings: list[str], fn: Callable[[], Any], empty: Any) -> Any:
    try:
        return fn()
    except (httpx.HTTPError, DeployError, OSError, KeyError, IndexError, ValueError) as error:
        warnings.append(
            f"{what} did not answer ({type(error).__name__}: {error}); its columns show -"
        )
        return empty


def fleet_status(deployment: Deployment, engines: dict[str, DockerEngine],
                 outputs: dict[str, Any], ca_file: Path) -> FleetStatus:  # fmt: skip
    plan = deployment.plan
    warnings: list[str] = []
    stack = plan.config.stack

    def on_host(host: str) -> dict[str, tuple[str, str]] | str:
        try:
            return _containers(engines[host], stack)
        except DeployError as error:
            return str(error)

    with ThreadPoolExecutor(max_workers=max(1, len(deployment.hosts))) as pool:
        listed = dict(zip(deployment.hosts, pool.map(on_host, deployment.hosts), strict=True))
    names = {r[0] for s in deployment.specs if (r := consul_service(s))}
    consul: dict[tuple[str, str, int], str] = _attempt(
        "Consul", warnings, lambda: _consul_health(outputs, ca_file, names), {}
    )
    numbers: dict[tuple[str, ...], dict[str, float]] = {}
    host_numbers: dict[tuple[str, ...], dict[str, float]] = {}
    if plan.hosts_of("prometheus"):

        def ask(queries: dict[str, str], by: tuple[str, ...]) -> Any:
            auth = monitoring_auth(outputs)
            return _prometheus_numbers(deployment, ca_file, auth, queries, by)

        numbers = _attempt("Prometheus", warnings, lambda: ask(QUERIES, ("service", "host")), {})
        if plan.hosts_of("node-exporter") and not warnings:
            by_host = ("host",)
            host_numbers = _attempt("Prometheus", warnings, lambda: ask(HOST_QUERIES, by_host), {})
    hosts = []
    for host in deployment.hosts:
        containers = listed[host]
        endpoint = plan.config.host(host).docker
        if isinstance(containers, str):
            hosts.append(HostStatus(host, endpoint, containers, (), {}))
            continue
        rows = []
        for spec in deployment.rendered_specs(host, kv_seed=False):
            if spec.one_shot:
                continue
            state, health = containers.get(spec.name, ("missing", "-"))
            registered = consul_service(spec)
            rows.append(ContainerStatus(
                name=spec.name, role=spec.role, state=state, health=health,
                consul=consul.get((host, *registered), "-") if registered else "-",
                numbers=numbers.get((registered[0], host), {}) if registered else {},
            ))  # fmt: skip
        hosts.append(HostStatus(host, endpoint, "", tuple(rows), host_numbers.get((host,), {})))
    return FleetStatus(tuple(hosts), tuple(warnings))
