"""One loaded model per service: loaded in a worker thread, unloaded after an idle TTL.

``/ready`` follows ``ModelHolder.ready``: true once the first load succeeded. After an
idle unload the service stays ready; the next request loads the model again (its load
time is recorded like the first).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

from morgan.models import metrics
from morgan.models.errors import ModelNotReady

T = TypeVar("T")
log = logging.getLogger(__name__)


class ModelHolder(Generic[T]):
    """Holds the object ``loader()`` returns; ``use()`` gives it to one request at a time."""

    def __init__(
        self,
        loader: Callable[[], T],
        *,
        service: str,
        model: str,
        idle_unload_seconds: float = 0.0,
        unloader: Callable[[T], None] | None = None,
    ) -> None:
        self._loader = loader
        self._unloader = unloader
        self.service = service
        self.model = model
        self.idle_unload_seconds = idle_unload_seconds
        self._value: T | None = None
        self._lock = asyncio.Lock()
        self._in_use = 0
        self._last_used = time.monotonic()
        self.ready = False
        self.last_error: str | None = None
        self.load_seconds: float | None = None
        self.loads = 0
        self._idle_task: asyncio.Task[None] | None = None
        self._idle_unloading = False
        self._idle_changed = asyncio.Event()

    @property
    def loaded(self) -> bool:
        return self._value is not None

    async def load(self) -> T:
        async with self._lock:
            if self._value is not None:
                return self._value
            started = time.perf_counter()
            try:
                value = await asyncio.to_thread(self._loader)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("loading %s model %s failed: %s", self.service, self.model, exc)
                raise
            self.load_seconds = time.perf_counter() - started
            self.loads += 1
            self._value = value
            self._last_used = time.monotonic()
            self.ready = True
            self.last_error = None
            metrics.MODEL_LOAD_SECONDS.labels(self.service, self.model).set(self.load_seconds)
            metrics.MODEL_LOADED.labels(self.service, self.model).set(1)
            log.info("%s model %s loaded in %.2f s", self.service, self.model, self.load_seconds)
            return value

    async def unload(self) -> bool:
        async with self._lock:
            if self._value is None or self._in_use:
                return False
            value, self._value = self._value, None
            if self._unloader is not None:
                await asyncio.to_thread(self._unloader, value)
            del value
            gc.collect()
            metrics.MODEL_LOADED.labels(self.service, self.model).set(0)
            log.info(
                "%s model %s unloaded after %.0f s idle",
                self.service,
                self.model,
                self.idle_unload_seconds,
            )
            return True

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[T]:
        """The loaded model for one request (loading it again after an idle unload)."""
        self._in_use += 1
        try:
            try:
                value = await self.load()
            except Exception as exc:
                raise ModelNotReady(self.service, self.last_error or str(exc)) from exc
            yield value
        finally:
            self._in_use -= 1
            self._last_used = time.monotonic()

    def peek(self) -> T | None:
        return self._value

    def start_idle_unloader(self) -> None:
        self._idle_unloading = True
        if self.idle_unload_seconds > 0 and self._idle_task is None:
            self._idle_task = asyncio.create_task(self._idle_loop(), name="model-idle-unload")

    def set_idle_unload_seconds(self, seconds: float) -> None:
        """A new idle TTL (0 = never unload), followed at once by a started unloader."""
        self.idle_unload_seconds = seconds
        self._idle_changed.set()
        if self._idle_unloading:
            self.start_idle_unloader()

    async def stop(self) -> None:
        self._idle_unloading = False
        if self._idle_task is not None:
            self._idle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle_task
            self._idle_task = None

    async def _idle_loop(self) -> None:
        while True:
            if self.idle_unload_seconds <= 0:
                self._idle_task = None
                return
            self._idle_changed.clear()
            period = max(0.05, min(self.idle_unload_seconds / 4, 30.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle_changed.wait(), period)
            if self.idle_unload_seconds <= 0:
                continue
            idle = time.monotonic() - self._last_used
            if self._value is not None and not self._in_use and idle >= self.idle_unload_seconds:
                await self.unload()
