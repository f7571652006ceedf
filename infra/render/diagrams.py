"""Mermaid diagrams drawn from a plan: the hosts and what runs on each, and who calls whom.

`morgan render --diagrams FILE` rewrites the generated blocks of docs/architecture.md
from the homelab stack, and a test regenerates them and compares, so the pictures in the
docs are the plan's and cannot drift from it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from infra.config import HostConfig
from infra.placement import Plan


@dataclass(frozen=True)
class Call:
    """One role calling another: `caller` opens the connection to `callee`."""

    caller: str
    callee: str
    why: str


# Who calls whom, as the services are written (morgan.core's clients, the support
# services' configs in infra/configs). An edge is drawn when the plan places both ends.
CALLS: tuple[Call, ...] = (
    Call("traefik", "core", "routes /api and /ws"),
    Call("traefik", "consul-agent", "reads the catalogue"),
    Call("core", "llm", "reply"),
    Call("core", "stt", "transcribe"),
    Call("core", "tts", "speak"),
    Call("core", "vad", "hands-free audio"),
    Call("core", "postgres-primary", "conversations"),
    Call("core", "redis", "cache, rate limits"),
    Call("core", "qdrant", "memory search"),
    Call("core", "consul-agent", "discovery, config, keys"),
    Call("llm", "consul-agent", "registers"),
    Call("stt", "consul-agent", "registers"),
    Call("tts", "consul-agent", "registers"),
    Call("vad", "consul-agent", "registers"),
    Call("consul-agent", "consul-server", "RPC, gossip"),
    Call("postgres-standby", "postgres-primary", "streams WAL"),
    Call("redis-replica", "redis", "replicates"),
    Call("prometheus", "consul-agent", "discovers targets"),
    Call("prometheus", "core", "scrapes"),
    Call("prometheus", "llm", "scrapes"),
    Call("prometheus", "stt", "scrapes"),
    Call("prometheus", "tts", "scrapes"),
    Call("prometheus", "vad", "scrapes"),
    Call("prometheus", "alertmanager", "alerts"),
    Call("grafana", "prometheus", "queries"),
    Call("grafana", "loki", "queries"),
    Call("promtail", "loki", "pushes logs"),
)

# Extra edges a setting adds.
PATRONI_CALLS: tuple[Call, ...] = (
    Call("postgres-primary", "consul-agent", "Patroni leader lock"),
    Call("postgres-standby", "consul-agent", "Patroni leader lock"),
)

BEGIN = "<!-- BEGIN generated: {name} (morgan render --diagrams; do not edit) -->"
END = "<!-- END generated: {name} -->"
_BLOCK = re.compile(
    r"<!-- BEGIN generated: (?P<name>[a-z-]+) .*?-->\n.*?<!-- END generated: (?P=name) -->",
    re.DOTALL,
)


class DiagramError(ValueError):
    """The document's generated blocks do not match what can be drawn."""


def _node(name: str) -> str:
    return name.replace("-", "_")


def _machine(host: HostConfig) -> str:
    gpu = f", {host.gpu.vendor} GPU {host.gpu.vram_mb // 1024} GB" if host.gpu else ""
    return f"{host.os} {host.arch}, {host.memory_mb // 1024} GB{gpu}"


def topology(plan: Plan) -> str:
    """One box per host (its machine, its Docker endpoint), the replicas placed on it."""
    lines = ["flowchart LR"]
    for host in plan.hosts:
        lines.append(f'  subgraph {_node(host.name)}["{host.name}: {_machine(host)}"]')
        counts: dict[str, int] = {}
        for replica in plan.on_host(host.name):
            counts[replica.role] = counts.get(replica.role, 0) + 1
        for role, count in counts.items():
            label = f"{role} x{count}" if count > 1 else role
            lines.append(f'    {_node(host.name)}_{_node(role)}["{label}"]')
        lines.append("  end")
    servers = [f"{_node(h)}_consul_server" for h in plan.consul_servers]
    for left, right in itertools.pairwise(servers):
        lines.append(f"  {left} -. raft .- {right}")
    return "\n".join(lines)


def calls(plan: Plan) -> tuple[Call, ...]:
    """The calls between the roles this plan places."""
    placed = {r.role for r in plan.replicas}
    edges = CALLS + (PATRONI_CALLS if plan.config.postgres.ha == "patroni" else ())
    return tuple(c for c in edges if c.caller in placed and c.callee in placed)


def dependencies(plan: Plan) -> str:
    """Roles as nodes (with their replica count), calls as labelled edges."""
    counts: dict[str, int] = {}
    for replica in plan.replicas:
        counts[replica.role] = counts.get(replica.role, 0) + 1
    lines = ["flowchart TD", '  client(["client: app, browser"])']
    for role, count in counts.items():
        label = f"{role} x{count}" if count > 1 else role
        lines.append(f'  {_node(role)}["{label}"]')
    lines.append('  client -->|"HTTPS, WebSocket"| traefik')
    for call in calls(plan):
        lines.append(f'  {_node(call.caller)} -->|"{call.why}"| {_node(call.callee)}')
    return "\n".join(lines)


def diagrams(plan: Plan) -> dict[str, str]:
    """Block name → mermaid source."""
    return {"topology": topology(plan), "dependencies": dependencies(plan)}


def update_document(text: str, plan: Plan) -> str:
    """`text` with every generated block redrawn from `plan`; each block must be present."""
    drawn = diagrams(plan)
    found = {m.group("name") for m in _BLOCK.finditer(text)}
    unknown = found - drawn.keys()
    missing = drawn.keys() - found
    if unknown or missing:
        raise DiagramError(
            f"generated blocks: unknown {sorted(unknown)}, missing {sorted(missing)};"
            f" the document needs exactly {sorted(drawn)}, each between"
            f" {BEGIN.format(name='NAME')!r} and {END.format(name='NAME')!r}"
        )

    def redraw(match: re.Match[str]) -> str:
        name = match.group("name")
        return "\n".join(
            (BEGIN.format(name=name), "```mermaid", drawn[name], "```", END.format(name=name))
        )

    return _BLOCK.sub(redraw, text)
