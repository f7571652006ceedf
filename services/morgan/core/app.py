"""build_app: core's FastAPI app on top of the shared service factory."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from morgan.core.client_files import mount_client
from morgan.core.config import CoreSettings
from morgan.core.connection_urls import with_password
from morgan.core.exceptions import TurnError
from morgan.core.memory.embedder import SentenceEmbedder
from morgan.core.memory.pg_store import PgMemoryStore
from morgan.core.memory.store import MemoryStore, SemanticMemory
from morgan.core.model_clients import ModelClients
from morgan.core.orchestrator import Orchestrator
from morgan.core.rate_limit import RateLimiter, RateLimitMiddleware
from morgan.core.router import router
from morgan.core.storage.cache import ContextCache, TlsFiles, parse_nodes
from morgan.core.storage.context import ConversationStore
from morgan.core.storage.conversations import ConversationRepository
from morgan.core.ws import router as ws_router
from morgan.shared import consul_names
from morgan.shared.app import create_app
from morgan.shared.auth import USER_SCOPES, ApiKeyStore
from morgan.shared.body_limit import BodyLimitMiddleware
from morgan.shared.config_loader import ConsulConfigLoader
from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.settings import ServiceSettings

log = logging.getLogger(__name__)

# Multipart framing around a 25 MB file is a few hundred bytes; leave generous room.
_MULTIPART_SLACK = 64 * 1024


def make_cache(s: CoreSettings, nodes: list[str] | None = None) -> ContextCache:
    """The context cache; `nodes` are the cluster's startup nodes with Consul names expanded."""
    if s.redis_cluster_nodes:
        password = s.redis_password.get_secret_value() or None
        tls = None
        if s.redis_tls:
            if not s.tls_enabled:
                raise RuntimeError(
                    "redis_tls is on but tls_ca, tls_cert and tls_key are not all set;"
                    " set them (MORGAN_CORE_TLS_*) or turn redis_tls off"
                )
            tls = TlsFiles(ca=str(s.tls_ca), cert=str(s.tls_cert), key=str(s.tls_key))
        return ContextCache.cluster(
            parse_nodes(nodes or s.redis_cluster_nodes), ttl_s=s.cache_ttl_seconds,
            password=password, tls=tls,
        )  # fmt: skip
    if s.redis_url.get_secret_value():
        url = with_password(s.redis_url.get_secret_value(), s.redis_password.get_secret_value(),
                            setting="redis_url")  # fmt: skip
        return ContextCache.standalone(url, ttl_s=s.cache_ttl_seconds)
    log.warning("no redis_cluster_nodes or redis_url: the context cache is off")
    return ContextCache.disabled()


async def start_core(app: FastAPI) -> None:
    s: CoreSettings = app.state.settings
    dsn = s.postgres_dsn.get_secret_value()
    if not dsn:
        raise RuntimeError(
            "postgres_dsn is not set; export MORGAN_CORE_POSTGRES_DSN="
            "postgresql://user@host:5432/morgan and MORGAN_CORE_POSTGRES_PASSWORD_FILE"
        )
    dsn = with_password(dsn, s.postgres_password.get_secret_value(), setting="postgres_dsn")
    nodes = list(s.redis_cluster_nodes)
    if consul_names.has_names(dsn) or any(consul_names.has_names(n) for n in nodes):
        lookup = consul_names.catalog_instances(ConsulClientFactory.from_env())
        dsn = await asyncio.to_thread(consul_names.expand, dsn, lookup)
        nodes = await asyncio.to_thread(consul_names.expand_nodes, nodes, lookup)
        log.info("consul names: postgres at %s, redis nodes %s", dsn.split("@")[-1], nodes)
    repo = ConversationRepository(
        dsn, min_size=s.postgres_pool_min, max_size=s.postgres_pool_max,
        max_attempts=s.postgres_max_attempts,
    )  # fmt: skip
    applied = await repo.start()
    if applied:
        log.info("postgres: applied migrations %s", applied)
    cache = make_cache(s, nodes)
    store = ConversationStore(repo, cache, context_turns=max(1, s.context_turns))
    memory: SemanticMemory | None = None
    if s.memory_enabled:
        embedder = await asyncio.to_thread(
            SentenceEmbedder, s.memory_model_path, threads=s.memory_threads
        )
        if s.memory_store == "postgres":
            # Sized like the conversation store: every turn searches and stores a memory.
            memory = PgMemoryStore(
                dsn, embedder, min_size=s.postgres_pool_min, max_size=s.postgres_pool_max
            )
        else:
            memory = MemoryStore.open(
                embedder,
                url=s.qdrant_url or None,
                path=None if s.qdrant_url else s.qdrant_path,
                api_key=s.qdrant_api_key.get_secret_value() or None,
                collection=s.memory_collection,
            )
        await memory.start()
    try:
        await store.warm(s.cache_warm_count)
    except Exception as exc:  # a cold cache is slower, not broken
        log.warning("cache warming failed: %s", exc)
    store.start_background_refresh(s.cache_refresh_seconds, s.cache_refresh_count)

    def current() -> CoreSettings:
        settings: CoreSettings = app.state.settings
        return settings

    models = ModelClients(app.state.http_client, current)
    app.state.rate_limiter = RateLimiter(cache, current)
    app.state.orchestrator = Orchestrator(current, models, store, memory)


async def apply_core_settings(app: FastAPI, new: ServiceSettings) -> None:
    """The loader reported a change: bring the running orchestrator in line."""
    orch: Orchestrator | None = getattr(app.state, "orchestrator", None)
    if orch is None or not isinstance(new, CoreSettings):
        return
    try:
        await orch.apply(new)
    except Exception:
        log.exception("applying the new core settings failed; the previous limits stay")


async def stop_core(app: FastAPI) -> None:
    orch: Orchestrator | None = getattr(app.state, "orchestrator", None)
    if orch is None:
        return
    app.state.orchestrator = None
    await orch.store.stop()
    await orch.store.cache.close()
    await orch.store.repo.close()
    if orch.memory is not None:
        await orch.memory.close()
        orch.memory.embedder.close()


def build_app(
    settings: CoreSettings,
    *,
    config_loader: ConsulConfigLoader[CoreSettings] | None = None,
    api_key_store: ApiKeyStore | None = None,
) -> FastAPI:
    async def ready() -> bool:
        orch: Orchestrator | None = getattr(app.state, "orchestrator", None)
        return orch is not None and await orch.store.repo.ping()

    app = create_app(
        settings,
        routers=[router, ws_router],
        ready_check=ready,
        on_startup=[start_core],
        on_shutdown=[stop_core],
        meta={"engine": "orchestrator"},
        config_loader=config_loader,
        auth_required_prefixes=("/api", "/ws"),
        accepted_scopes=USER_SCOPES,
        api_key_store=api_key_store,
        on_config_change=apply_core_settings,
    )
    app.title = "Morgan core"
    app.description = "Text and voice turns, conversations and memory."
    mount_client(app)

    def body_limit(path: str) -> int | None:
        s: CoreSettings = app.state.settings
        if path == "/api/audio":
            return s.max_audio_bytes + _MULTIPART_SLACK
        if path.startswith("/api/"):
            return s.max_text_body_bytes
        return None

    app.add_middleware(BodyLimitMiddleware, limits=body_limit)
    # Outermost: a request past its client's budget is refused before anything reads it.
    app.add_middleware(
        RateLimitMiddleware, limiter=lambda: getattr(app.state, "rate_limiter", None)
    )

    @app.exception_handler(TurnError)
    async def _turn_error(request: Request, exc: TurnError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": exc.message, "detail": exc.error},
            headers=exc.headers or None,
        )

    return app
