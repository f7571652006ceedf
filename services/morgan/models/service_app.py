"""Wiring shared by the three model services: error rendering, model loading, Consul meta."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from morgan.models.errors import ModelRequestError
from morgan.models.holder import ModelHolder
from morgan.models.slots import MeteredLimiter
from morgan.shared.app import create_app
from morgan.shared.body_limit import BodyLimitMiddleware
from morgan.shared.client_gone import ClientGoneMiddleware
from morgan.shared.config_loader import ConsulConfigLoader
from morgan.shared.middleware import PUBLIC_PATHS
from morgan.shared.settings import ServiceSettings

log = logging.getLogger(__name__)


def install_model_error_handler(app: FastAPI) -> None:
    @app.exception_handler(ModelRequestError)
    async def _model_error(request: Request, exc: ModelRequestError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content=exc.body(), headers=exc.headers)


def detect_vram_mb(device: str) -> int:
    """Total memory of GPU 0 in MiB when the device is CUDA and torch sees it, else 0."""
    if device != "cuda":
        return 0
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory // (1024 * 1024))
    except Exception as exc:  # torch missing or driver trouble: advertise 0, do not fail
        log.warning("cannot read GPU memory: %s", exc)
    return 0


CAPACITY_META = "capacity"


def model_meta(
    *, engine: str, model: str, device: str, vram_mb: int, capacity: int
) -> dict[str, str]:
    """The instance's Consul meta. `capacity`: requests it holds at once (running plus
    waiting), which core sizes its admission from."""
    return {
        CAPACITY_META: str(capacity),
        "engine": engine,
        "model": model,
        "device": device,
        "vram_mb": str(vram_mb or detect_vram_mb(device)),
        "arch": os.environ.get("MORGAN_HOST_ARCH") or platform.machine().lower(),
    }


class BackgroundLoad:
    """Starts the first model load at start-up without holding up registration or /health."""

    def __init__(self, holder: ModelHolder[Any]) -> None:
        self.holder = holder
        self.task: asyncio.Task[Any] | None = None

    async def start(self, app: FastAPI) -> None:
        async def _load() -> None:
            with contextlib.suppress(Exception):  # logged by the holder; /ready stays false
                await self.holder.load()

        self.task = asyncio.create_task(_load(), name="model-load")
        self.holder.start_idle_unloader()

    async def stop(self, app: FastAPI) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.holder.stop()

    async def ready(self) -> bool:
        return self.holder.ready


def current_settings(app: FastAPI) -> Callable[[], Any]:
    """A callable giving `app.state.settings` as it is now (updated live from Consul KV)."""
    return lambda: app.state.settings


class ModelEngine(Protocol):
    engine_name: str
    device: str

    def unload(self) -> None: ...


class ModelServiceSettings(Protocol):
    service_name: str
    max_concurrency: int
    max_queue: int
    idle_unload_seconds: float
    vram_mb: int

    def max_request_bytes(self) -> int:
        """The largest request body this service reads (413 past it, before reading it)."""
        ...


E = TypeVar("E", bound=ModelEngine)


@dataclass(frozen=True)
class ModelApp(Generic[E]):
    app: FastAPI
    holder: ModelHolder[E]
    limiter: MeteredLimiter


def build_model_app(
    settings: ServiceSettings,
    *,
    engine: E,
    load: Any,
    model_name: str,
    router: APIRouter,
    loader: ConsulConfigLoader[Any] | None,
    auth_required_prefixes: Sequence[str] = ("/v1",),
) -> ModelApp[E]:
    """The app of one model service: the model loads in the background after start-up
    (/ready waits for it), requests queue on a bounded limiter, and the instance is
    registered with its engine, model and device. A settings change from `loader` resizes
    the limiter and resets the idle-unload TTL; `current_settings(app)` gives the settings
    each request should use."""
    tuned: ModelServiceSettings = settings  # type: ignore[assignment]
    holder: ModelHolder[E] = ModelHolder(
        load,
        unloader=lambda e: e.unload(),
        service=tuned.service_name,
        model=model_name,
        idle_unload_seconds=tuned.idle_unload_seconds,
    )
    limiter = MeteredLimiter(tuned.max_concurrency, tuned.max_queue, service=tuned.service_name)
    background = BackgroundLoad(holder)

    async def follow_settings(app: FastAPI, new: ServiceSettings) -> None:
        changed: ModelServiceSettings = new  # type: ignore[assignment]
        try:
            limiter.resize(changed.max_concurrency, changed.max_queue)
            holder.set_idle_unload_seconds(changed.idle_unload_seconds)
        except Exception:
            log.exception(
                "applying new limits to %s failed; the previous limits stay", changed.service_name
            )
            return
        registry = getattr(app.state, "registry", None)
        capacity = str(changed.max_concurrency + changed.max_queue)
        if registry is None or registry.meta.get(CAPACITY_META) == capacity:
            return
        registry.meta[CAPACITY_META] = capacity
        try:
            await registry.register()  # the same id: Consul updates its meta
        except Exception as error:
            log.warning(
                "%s: the new capacity %s did not reach Consul (%s); the registry's next"
                " anti-entropy pass (every %.0f s) sends it",
                changed.service_name,
                capacity,
                error,
                registry.anti_entropy_seconds,
            )

    app = create_app(
        settings,
        routers=[router],
        ready_check=background.ready,
        on_startup=[background.start],
        on_shutdown=[background.stop],
        meta=model_meta(
            engine=engine.engine_name,
            model=model_name,
            device=engine.device,
            vram_mb=tuned.vram_mb,
            capacity=tuned.max_concurrency + tuned.max_queue,
        ),
        config_loader=loader,
        auth_required_prefixes=auth_required_prefixes,
        on_config_change=follow_settings,
    )
    install_model_error_handler(app)

    def body_limit(path: str) -> int | None:
        current: ModelServiceSettings = app.state.settings
        return None if path in PUBLIC_PATHS else current.max_request_bytes()

    app.add_middleware(BodyLimitMiddleware, limits=body_limit)
    # Outermost: it watches the server's own receive for the client's disconnect.
    app.add_middleware(ClientGoneMiddleware)
    app.state.model_holder = holder
    return ModelApp(app=app, holder=holder, limiter=limiter)
