"""`create_app`: the one FastAPI factory every Morgan service uses, and `run` to serve it.

Every app gets: Consul registration for its lifetime (deregistered on shutdown and SIGTERM),
`/health` (alive), `/ready` (dependencies reachable and not draining), `/metrics`, JSON logs
with request ids, API-key auth on protected prefixes, JSON errors, live config from Consul KV,
HTTPS with client-certificate verification when the settings name a CA, cert and key, and a
graceful SIGTERM: not-ready → deregister → drain in-flight requests → exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import signal
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from types import FrameType
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from morgan.shared.auth import ApiKeyStore, AuthError, key_from_headers
from morgan.shared.config_loader import ConfigWatch, ConsulConfigLoader
from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.discovery import ConsulServiceDiscovery
from morgan.shared.http_client import MorganHTTPClient
from morgan.shared.logging import REQUEST_ID_HEADER, request_id_var, setup_logging, user_id_var
from morgan.shared.metrics import (
    HTTP_REQUEST_DURATION_SECONDS,
    HTTP_REQUESTS_IN_FLIGHT,
    HTTP_REQUESTS_TOTAL,
    UNMATCHED_ROUTE,
    render_latest,
)
from morgan.shared.registry import ConsulRegistry
from morgan.shared.settings import ServiceSettings

log = logging.getLogger("morgan.app")
access_log = logging.getLogger("morgan.access")

PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"})
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

LifecycleHook = Callable[[FastAPI], Awaitable[None]]


def _json_body(status: int, error: str, detail: Any = None) -> tuple[bytes, list[tuple[bytes,
                                                                                    bytes]]]:
    import json

    body = json.dumps({"error": error, "detail": detail}, default=str).encode()
    return body, [(b"content-type", b"application/json"),
                  (b"content-length", str(len(body)).encode())]


class EdgeMiddleware:
    """Request ids, user ids, metrics, access log, API-key auth and last-resort 500s."""

    def __init__(
        self, app: ASGIApp, *, fastapi_app: FastAPI, auth_required_prefixes: Sequence[str]
    ) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.prefixes = tuple(auth_required_prefixes)

    def _needs_auth(self, path: str) -> bool:
        if path in PUBLIC_PATHS:
            return False
        settings: ServiceSettings = self.fastapi_app.state.settings
        if not settings.auth_enabled:
            return False
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        rid = headers.get(REQUEST_ID_HEADER.lower(), "")
        if not _REQUEST_ID_OK.match(rid):
            rid = uuid.uuid4().hex
        rid_token = request_id_var.set(rid)
        uid_token = user_id_var.set(None)
        try:
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send, headers)
            else:
                await self._http(scope, receive, send, headers, rid)
        finally:
            request_id_var.reset(rid_token)
            user_id_var.reset(uid_token)

    async def _authenticate(self, scope: Scope, headers: Mapping[str, str],
                            allow_query: bool) -> AuthError | None:
        store: ApiKeyStore | None = getattr(self.fastapi_app.state, "api_key_store", None)
        key = key_from_headers(headers)
        if not key and allow_query:
            from urllib.parse import parse_qs

            key = (parse_qs(scope.get("query_string", b"").decode()).get("api_key") or [None])[0]
        if not key:
            return AuthError("missing", "missing API key: send X-API-Key or "
                             "Authorization: Bearer <key>")
        if store is None:
            return AuthError("unconfigured", "API keys are not configured on this service")
        try:
            record = await store.averify(key)
        except AuthError as exc:
            return exc
        except Exception as exc:
            log.warning("API key check failed: %s", exc)
            return AuthError("unavailable", "cannot check API keys right now (Consul "
                             "unreachable); retry shortly")
        user_id_var.set(record.owner)
        scope.setdefault("state", {})["api_key"] = record
        return None

    async def _websocket(self, scope: Scope, receive: Receive, send: Send,
                         headers: Mapping[str, str]) -> None:
        if self._needs_auth(scope["path"]):
            err = await self._authenticate(scope, headers, allow_query=True)
            if err is not None:
                log.info("websocket refused: %s", err.message)
                await send({"type": "websocket.close", "code": 1008, "reason": err.message[:120]})
                return
        await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send,
                    headers: Mapping[str, str], rid: str) -> None:
        settings: ServiceSettings = self.fastapi_app.state.settings
        service = settings.service_name
        method = scope["method"]
        state = {"status": 500, "started": False}
        rid_header = (REQUEST_ID_HEADER.lower().encode(), rid.encode())

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        async def send_json(status: int, error: str, detail: Any = None,
                            extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
            body, hdrs = _json_body(status, error, detail)
            await send_wrapper({"type": "http.response.start", "status": status,
                                "headers": [*hdrs, *extra]})
            await send_wrapper({"type": "http.response.body", "body": body})

        gauge = HTTP_REQUESTS_IN_FLIGHT.labels(service)
        gauge.inc()
        self.fastapi_app.state.in_flight += 1
        start = time.perf_counter()
        try:
            if self._needs_auth(scope["path"]):
                err = await self._authenticate(scope, headers, allow_query=False)
                if err is not None:
                    status = 503 if err.reason == "unavailable" else 401
                    await send_json(status, "unauthorized" if status == 401 else "unavailable",
                                    err.message, [(b"www-authenticate", b"Bearer")])
                    return
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception:
                log.exception("unhandled error serving %s %s", method, scope["path"])
                if not state["started"]:
                    await send_json(500, "internal error",
                                    f"unexpected error; quote request id {rid} when reporting it")
        finally:
            elapsed = time.perf_counter() - start
            gauge.dec()
            self.fastapi_app.state.in_flight -= 1
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            if state["status"] == 404 and route is None:
                template = UNMATCHED_ROUTE
            status_text = str(state["status"])
            HTTP_REQUESTS_TOTAL.labels(service, template, method, status_text).inc()
            HTTP_REQUEST_DURATION_SECONDS.labels(service, template, method).observe(elapsed)
            if scope["path"] not in PUBLIC_PATHS:
                access_log.info("%s %s %s", method, template, status_text, extra={
                    "method": method, "route": template, "path": scope["path"],
                    "status": int(status_text), "duration_ms": round(elapsed * 1000, 2)})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse(
            status_code=422,
            content={"error": f"invalid request: {where}: {first['msg']}", "detail": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        error = detail if isinstance(detail, str) else f"HTTP {exc.status_code}"
        return JSONResponse(status_code=exc.status_code,
                            content={"error": error, "detail": detail},
                            headers=getattr(exc, "headers", None))


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
    api_key_store: ApiKeyStore | None = None,
    on_config_change: Callable[[FastAPI, ServiceSettings], Coroutine[Any, Any, None]]
    | None = None,
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
        )
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
    app.state.in_flight = 0
    app.state.registry = None
    app.state.api_key_store = api_key_store or ApiKeyStore(
        consul, cache_seconds=settings.api_key_cache_seconds
    )
    _install_error_handlers(app)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        s: ServiceSettings = app.state.settings
        return {"status": "ok", "service": s.service_name, "version": s.version}

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
        EdgeMiddleware, fastapi_app=app, auth_required_prefixes=auth_required_prefixes
    )
    return app


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
        log.info("received %s: not ready, deregistering, then draining in-flight requests",
                 signal.Signals(sig).name)
        loop = self._loop

        def _begin() -> None:
            loop.create_task(self._deregister_then_exit(sig, frame))

        loop.call_soon_threadsafe(_begin)

    async def _deregister_then_exit(self, sig: int, frame: FrameType | None) -> None:
        registry: ConsulRegistry | None = getattr(self.fastapi_app.state, "registry", None)
        if registry is not None:
            await registry.stop()
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
        **kwargs,
    )


def run(app: FastAPI, settings: ServiceSettings | None = None) -> None:
    """Serve `app` until SIGTERM/SIGINT, then shut down gracefully."""
    s: ServiceSettings = settings or app.state.settings
    setup_logging(s.service_name, s.host, s.log_level)
    GracefulServer(server_config(app, s), app).run()


async def serve(app: FastAPI, settings: ServiceSettings | None = None) -> None:
    """Async variant of `run` (for callers that already run an event loop)."""
    s: ServiceSettings = settings or app.state.settings
    await GracefulServer(server_config(app, s), app).serve()


def maybe_await(value: Any) -> Awaitable[Any]:
    if inspect.isawaitable(value):
        return value

    async def _done() -> Any:
        return value

    return _done()
