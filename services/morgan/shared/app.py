"""`create_app`: the one FastAPI factory every Morgan service uses.

Every app gets: Consul registration for its lifetime (deregistered on shutdown and SIGTERM),
`/health` (alive), `/ready` (dependencies reachable and not draining), `/metrics`, JSON logs
with request ids, API-key auth on protected prefixes, JSON errors and live config from
Consul KV. `morgan.shared.server.run` serves it (HTTPS and graceful SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response

from morgan.shared.auth import SERVICE_SCOPES, ApiKeyStore
from morgan.shared.config_loader import ConfigWatch, ConsulConfigLoader
from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.discovery import ConsulServiceDiscovery
from morgan.shared.error_handlers import install_error_handlers
from morgan.shared.http_client import MorganHTTPClient
from morgan.shared.logging import setup_logging
from morgan.shared.metrics import render_latest
from morgan.shared.middleware import EdgeMiddleware
from morgan.shared.registry import ConsulRegistry
from morgan.shared.settings import ServiceSettings
from morgan.shared.tls_expiry import record_expiry

log = logging.getLogger("morgan.app")

LifecycleHook = Callable[[FastAPI], Awaitable[None]]


def create_app(
    settings: ServiceSettings,
    *,
    routers: Sequence[APIRouter] = (),
    ready_check: Callable[[], Awaitable[bool]] | None = None,
    on_startup: Sequence[LifecycleHook] = (),
    on_shutdown: Sequence[LifecycleHook] = (),
    meta: Mapping[str, str] | None = None,
    config_loader: ConsulConfigLoader[Any] | None = None,
    auth_required_prefixes: Sequence[str] = ("/api", "/v1"),
    accepted_scopes: frozenset[str] = SERVICE_SCOPES,
    api_key_store: ApiKeyStore | None = None,
    on_config_change: Callable[[FastAPI, ServiceSettings], Coroutine[Any, Any, None]] | None = None,
) -> FastAPI:
    """Build a service's FastAPI app. See the module docstring for what every app gets.

    `app.state` holds: settings (updated live from Consul KV when `config_loader` is given),
    consul (ConsulClientFactory), discovery (ConsulServiceDiscovery), http_client
    (MorganHTTPClient), api_key_store, registry (ConsulRegistry or None), draining (bool).
    """
    consul = ConsulClientFactory.from_env(settings.consul_http_addr)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        current: ServiceSettings = app.state.settings
        setup_logging(current.service_name, current.host, current.log_level)
        watch: ConfigWatch | None = None
        loop = asyncio.get_running_loop()
        if config_loader is not None:
            if config_loader.current is None:
                config_loader.current = current

            def _apply(new: ServiceSettings) -> None:
                app.state.settings = new
                logging.getLogger().setLevel(new.log_level)
                if on_config_change is not None:
                    asyncio.run_coroutine_threadsafe(on_config_change(app, new), loop)

            watch = config_loader.watch(_apply, loop=loop)
        app.state.discovery = ConsulServiceDiscovery(
            consul,
            cache_seconds=current.discovery_cache_seconds,
            stale_max_seconds=current.discovery_stale_max_seconds,
            caller=current.service_name,
            require_tls=current.tls_enabled,
        )
        if current.tls_enabled:
            assert current.tls_cert and current.tls_key and current.tls_ca
            record_expiry(current.service_name, current.tls_cert, current.tls_key, current.tls_ca)
        client_cert = (current.tls_cert, current.tls_key) if current.tls_enabled else None
        app.state.http_client = MorganHTTPClient(
            app.state.discovery,
            timeout=current.http_timeout_seconds,
            deadline=current.http_deadline_seconds,
            client_cert=client_cert,  # type: ignore[arg-type]
            ca_cert=current.tls_ca,
            caller=current.service_name,
        )
        for hook in on_startup:
            await hook(app)
        registry: ConsulRegistry | None = None
        if current.register_in_consul:
            registry = ConsulRegistry.from_settings(current, consul, extra_meta=meta)
            await registry.start()
        app.state.registry = registry
        log.info("%s ready on port %d", current.service_name, current.port)
        try:
            yield
        finally:
            app.state.draining = True
            if registry is not None:
                await registry.stop()
            for hook in on_shutdown:
                try:
                    await hook(app)
                except Exception:
                    log.exception("shutdown hook failed")
            if watch is not None:
                watch.stop()
            await app.state.http_client.aclose()
            app.state.discovery.close()
            log.info("%s stopped", current.service_name)

    app = FastAPI(
        title=settings.service_name,
        version=settings.version,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.consul = consul
    app.state.draining = False
    app.state.registry = None
    app.state.api_key_store = api_key_store or ApiKeyStore(
        consul, cache_seconds=settings.api_key_cache_seconds
    )
    install_error_handlers(app)

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        s: ServiceSettings = app.state.settings
        # Draining (SIGTERM): the gateway's health check drops this instance within one
        # interval, while it still answers what it is sent (server.GracefulServer).
        status, code = ("draining", 503) if app.state.draining else ("ok", 200)
        return JSONResponse(
            {"status": status, "service": s.service_name, "version": s.version}, status_code=code
        )

    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        if app.state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if ready_check is not None:
            try:
                ok = await ready_check()
            except Exception as exc:
                log.warning("ready check failed: %s", exc)
                return JSONResponse({"status": "not ready", "detail": str(exc)}, status_code=503)
            if not ok:
                return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = render_latest()
        return Response(body, media_type=content_type)

    for router in routers:
        app.include_router(router)
    app.add_middleware(
        EdgeMiddleware, fastapi_app=app, auth_required_prefixes=auth_required_prefixes,
        accepted_scopes=accepted_scopes,
    )  # fmt: skip
    return app
