"""Placement: a pure function from stack config to the plan of what runs where.

Rules, in order:
- an explicit `pin` puts exact counts on named hosts;
- otherwise the candidates are `hosts` if given, else every host that can run
  the service: `cuda` services need an NVIDIA GPU (never macOS, never arm64),
  `cpu` services prefer hosts without a GPU (the GPU stays free for the
  services that need it) and fall back to all hosts when none is CPU-only;
- replicas are spread round-robin over the candidates in stack order, so the
  counts differ by at most one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from infra.config import OBSERVABILITY_PARTS, SERVICE_NAMES, HostConfig, MorganStackConfig

ROLE_NAMES: tuple[str, ...] = (
    "core",
    "llm",
    "stt",
    "tts",
    "vad",
    "consul-server",
    "consul-agent",
    "postgres-primary",
    "postgres-standby",
    "redis",
    "redis-replica",
    "qdrant",
    "traefik",
    *OBSERVABILITY_PARTS,
)


class PlacementError(ValueError):
    """The fleet cannot run what the stack asks; the message says which key to change."""


@dataclass(frozen=True)
class Replica:
    """One running instance of a role on a host; `index` counts per role across the fleet."""

    role: str
    host: str
    index: int

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"


@dataclass(frozen=True)
class Plan:
    config: MorganStackConfig
    replicas: tuple[Replica, ...]
    consul_servers: tuple[str, ...] = field(default=())

    @property
    def hosts(self) -> tuple[HostConfig, ...]:
        return self.config.hosts

    def on_host(self, host: str) -> tuple[Replica, ...]:
        return tuple(r for r in self.replicas if r.host == host)

    def of_role(self, role: str) -> tuple[Replica, ...]:
        return tuple(r for r in self.replicas if r.role == role)

    def hosts_of(self, role: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.host for r in self.of_role(role)))

    def host_of(self, role: str) -> str | None:
        hosts = self.hosts_of(role)
        return hosts[0] if hosts else None

    def listen_address(self, host: str) -> str:
        """Where the host's internal listeners bind: loopback on a host addressed as
        loopback (the one-machine dev stack: nothing but the gateway is reachable from the
        home network), every interface on a fleet host (its peers connect over the LAN)."""
        address = self.config.host(host).address
        try:
            loopback = ipaddress.ip_address(address).is_loopback
        except ValueError:
            loopback = address == "localhost"
        return "127.0.0.1" if loopback else "0.0.0.0"

    def by_host(self) -> dict[str, list[str]]:
        """Host name → sorted role names, one per replica (what `morgan plan --json` prints)."""
        return {h.name: sorted(r.role for r in self.on_host(h.name)) for h in self.hosts}


def _candidates(config: MorganStackConfig, service: str) -> list[HostConfig]:
    svc = config.services.get(service)
    if svc.hosts is not None:
        chosen = [config.host(h) for h in svc.hosts]
    elif svc.device == "cuda":
        chosen = [h for h in config.hosts if h.has_gpu]
    else:
        cpu_only = [h for h in config.hosts if not h.has_gpu]
        chosen = cpu_only or list(config.hosts)
    if svc.device == "cuda":
        bad = [h.name for h in chosen if not h.has_gpu]
        if bad:
            raise PlacementError(
                f"services.{service}: device 'cuda' cannot run on {bad} (no NVIDIA GPU);"
                f" set services.{service}.device: cpu or list GPU hosts only"
            )
    if not chosen and svc.replicas:
        raise PlacementError(
            f"services.{service}: device {svc.device!r} needs a host with an NVIDIA GPU and the"
            f" stack has none; add gpu to a host or set services.{service}.device: cpu"
        )
    return chosen


def _spread(count: int, hosts: list[str]) -> list[str]:
    return [hosts[i % len(hosts)] for i in range(count)] if hosts else []


def _service_hosts(config: MorganStackConfig, service: str) -> list[str]:
    svc = config.services.get(service)
    if svc.pin is not None:
        if svc.device == "cuda":
            _check_gpu(config, service, [h for h, n in svc.pin.items() if n])
        out: list[str] = []
        for host in config.hosts:  # stack order, not pin order, for a stable plan
            out += [host.name] * svc.pin.get(host.name, 0)
        return out
    return _spread(svc.replicas, [h.name for h in _candidates(config, service)])


def _check_gpu(config: MorganStackConfig, service: str, hosts: list[str]) -> None:
    bad = [h for h in hosts if not config.host(h).has_gpu]
    if bad:
        raise PlacementError(
            f"services.{service}.pin: device 'cuda' cannot run on {bad} (no NVIDIA GPU);"
            f" pin GPU hosts only or set services.{service}.device: cpu"
        )


def _default_consul_servers(config: MorganStackConfig) -> tuple[str, ...]:
    linux_first = sorted(config.hosts, key=lambda h: h.os != "linux")
    count = 3 if len(config.hosts) >= 3 else 1
    chosen = {h.name for h in linux_first[:count]}
    return tuple(h.name for h in config.hosts if h.name in chosen)


def _first_linux(config: MorganStackConfig, exclude: str | None = None) -> str | None:
    for host in sorted(config.hosts, key=lambda h: h.os != "linux"):
        if host.name != exclude:
            return host.name
    return None


def make_plan(config: MorganStackConfig) -> Plan:
    """Decide which replica of every role runs on which host. Pure: same config, same plan."""
    placed: list[tuple[str, str]] = []
    for service in SERVICE_NAMES:
        placed += [(service, host) for host in _service_hosts(config, service)]

    servers = config.consul.servers or _default_consul_servers(config)
    placed += [("consul-server", h) for h in servers]
    for host in config.hosts:
        if config.consul.agent_on_server_hosts or host.name not in servers:
            placed.append(("consul-agent", host.name))

    primary = config.postgres.primary or _first_linux(config)
    assert primary is not None  # hosts is never empty (validated)
    placed.append(("postgres-primary", primary))
    if config.postgres.standby is not None:
        placed.append(("postgres-standby", config.postgres.standby))

    if config.redis.nodes is not None:
        redis_hosts = list(config.redis.nodes)
    elif config.redis.mode == "single":
        redis_hosts = [primary]
    else:
        if len(config.hosts) < 3:
            raise PlacementError(
                "redis.mode: 'cluster' needs three hosts and the stack has"
                f" {len(config.hosts)}; set redis.mode: single or list redis.nodes"
            )
        redis_hosts = [h.name for h in config.hosts[:3]]
    placed += [("redis", h) for h in redis_hosts]
    if config.redis.mode == "cluster" and config.redis.replicas:
        # Master i's replica on the next host: no host holds a master and its own replica.
        placed += [
            ("redis-replica", redis_hosts[(i + 1) % len(redis_hosts)])
            for i in range(len(redis_hosts))
        ]

    if config.memory.store == "qdrant" and config.qdrant.mode == "server":
        placed.append(("qdrant", config.qdrant.host or primary))

    placed.append(("traefik", config.gateway.host or primary))

    obs_host = config.observability.host or primary
    for part in config.observability.enabled:
        if part in ("promtail", "node-exporter"):
            placed += [(part, h.name) for h in config.hosts]
        elif part == "postgres-exporter":
            placed += [(part, h) for role, h in list(placed) if role.startswith("postgres-")]
        elif part == "redis-exporter":
            placed += [(part, h) for h in redis_hosts]
        elif part == "dcgm-exporter":
            placed += [(part, h.name) for h in config.hosts if h.has_gpu]
        else:
            placed.append((part, obs_host))

    counters: dict[str, int] = {}
    replicas: list[Replica] = []
    for role, host_name in placed:
        counters[role] = counters.get(role, 0) + 1
        replicas.append(Replica(role=role, host=host_name, index=counters[role]))
    return Plan(config=config, replicas=tuple(replicas), consul_servers=tuple(servers))


def plan_table(plan: Plan) -> list[tuple[str, str, str]]:
    """Rows (host, what the host is, what runs there) for `morgan plan`."""
    rows = []
    for host in plan.hosts:
        gpu = f", {host.gpu.vendor} {host.gpu.vram_mb} MB CUDA {host.gpu.cuda}" if host.gpu else ""
        counts: dict[str, int] = {}
        for role in plan.by_host()[host.name]:
            counts[role] = counts.get(role, 0) + 1
        what = ", ".join(f"{r} x{n}" if n > 1 else r for r, n in counts.items())
        rows.append((host.name, f"{host.os} {host.arch}{gpu}", what))
    return rows
