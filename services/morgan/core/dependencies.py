"""FastAPI dependencies: the running core components from app.state."""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

from morgan.core.memory.store import SemanticMemory
from morgan.core.orchestrator import Orchestrator


def get_orchestrator(conn: HTTPConnection) -> Orchestrator:
    orch: Orchestrator | None = getattr(conn.app.state, "orchestrator", None)
    if orch is None:
        raise HTTPException(503, "core is starting up; retry in a few seconds")
    return orch


def get_memory(request: Request) -> SemanticMemory:
    memory = get_orchestrator(request).memory
    if memory is None:
        raise HTTPException(
            404, "semantic memory is switched off on this core (memory_enabled=false)"
        )
    return memory
