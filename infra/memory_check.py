"""Will it fit? Warnings for hosts whose memory cannot hold what the plan puts there, and for
LLM containers too small for the catalog model their settings name."""

from __future__ import annotations

from morgan.catalog import SERVICE_PORTS
from morgan.models.store import CATALOG

from infra.placement import Plan


def memory_warnings(plan: Plan) -> list[str]:
    """One line per problem, naming the host or service and the fix; empty when it fits."""
    services = plan.config.services
    out: list[str] = []
    for host in plan.config.hosts:
        placed = [r.role for r in plan.on_host(host.name) if r.role in SERVICE_PORTS]
        need = sum(services.get(role).memory_mb for role in placed)
        if need > host.memory_mb:
            out.append(
                f"{host.name}: its Morgan services may use {need} MB ({', '.join(sorted(placed))})"
                f" but the host has {host.memory_mb} MB; move a replica (hosts/pin) or lower "
                "their memory_mb"
            )
    llm = services.llm
    model = str(llm.settings.get("model", ""))
    entry = CATALOG.get(model)
    if entry is not None and entry.ram_mb > llm.memory_mb:
        out.append(
            f"llm: model {model} needs about {entry.ram_mb} MB but each llm container may use "
            f"{llm.memory_mb} MB (services.llm.memory_mb); raise it or choose a smaller model"
        )
    return out
