"""Serving a Morgan app with uvicorn: `run`, `server_config` and `GracefulServer`.

`server_config` turns on HTTPS with client-certificate verification when the settings name a
CA, cert and key. The first SIGTERM/SIGINT is graceful: not-ready (/health and /ready 503),
deregister from Consul, keep accepting for `shutdown_delay_seconds` (the gateway's health
check drops the instance meanwhile), drain in-flight requests, exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from morgan.shared.logging import setup_logging
from morgan.shared.registry import ConsulRegistry
from morgan.shared.settings import ServiceSettings

log = logging.getLogger("morgan.app")


class GracefulServer(uvicorn.Server):
    """uvicorn server whose first SIGTERM/SIGINT marks the app not-ready and deregisters it
    from Consul before uvicorn stops accepting and drains in-flight requests."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.fastapi_app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._terminating = False

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._terminating or self._loop is None:
            super().handle_exit(sig, frame)
            return
        self._terminating = True
        self.fastapi_app.state.draining = True
        log.info(
            "received %s: not ready, deregistering, then draining in-flight requests",
            signal.Signals(sig).name,
        )
        loop = self._loop

        def _begin() -> None:
            loop.create_task(self._deregister_then_exit(sig, frame))

        loop.call_soon_threadsafe(_begin)

    async def _deregister_then_exit(self, sig: int, frame: FrameType | None) -> None:
        registry: ConsulRegistry | None = getattr(self.fastapi_app.state, "registry", None)
        if registry is not None:
            await registry.stop()
        settings: ServiceSettings = self.fastapi_app.state.settings
        # Still accepting: the gateway sees /health 503 and stops routing here first.
        await asyncio.sleep(settings.shutdown_delay_seconds)
        self.should_exit = True


def server_config(app: FastAPI, settings: ServiceSettings) -> uvicorn.Config:
    kwargs: dict[str, Any] = {}
    if settings.tls_enabled:
        kwargs = {
            "ssl_certfile": str(settings.tls_cert),
            "ssl_keyfile": str(settings.tls_key),
            "ssl_ca_certs": str(settings.tls_ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
    return uvicorn.Config(
        app,
        host=settings.bind_host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(max(1, settings.shutdown_drain_seconds)),
        lifespan="on",
        # X-Forwarded-For is read where it matters, from configured proxies only (core's
        # rate limits, `trusted_proxies`); uvicorn's default would trust it from loopback.
        proxy_headers=False,
        **kwargs,
    )


def run(app: FastAPI, settings: ServiceSettings | None = None) -> None:
    """Serve `app` until SIGTERM/SIGINT, then shut down gracefully."""
    s: ServiceSettings = settings or app.state.settings
    setup_logging(s.service_name, s.host, s.log_level)
    GracefulServer(server_config(app, s), app).run()
