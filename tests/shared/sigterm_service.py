"""A service process for the graceful-shutdown test: `python -m tests.shared.sigterm_service`.

Reads CONSUL_HTTP_ADDR, MORGAN_SIGTEST_PORT and MORGAN_SIGTEST_SERVICE_NAME; serves
GET /api/slow?seconds=N (no auth) and runs through morgan.shared.server.run.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from morgan.shared.app import create_app
from morgan.shared.config_loader import ConsulConfigLoader
from morgan.shared.server import run
from morgan.shared.settings import ServiceSettings

router = APIRouter()


@router.get("/api/slow")
async def slow(seconds: float = 1.0) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


def main() -> None:
    settings = ConsulConfigLoader(ServiceSettings, "sigtest").load()
    run(create_app(settings, routers=[router]), settings)


if __name__ == "__main__":
    main()
