"""Bounded concurrency: N requests run, up to M wait, the rest are refused at once (503)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from morgan.models.errors import ServiceBusy


class ConcurrencyLimiter:
    """``max_concurrency`` requests run at a time; ``max_queue`` more wait; others get 503."""

    def __init__(
        self, max_concurrency: int, max_queue: int, *, what: str, retry_after_seconds: int = 1
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_queue < 0:
            raise ValueError("max_queue must be 0 or more")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.what = what
        self.retry_after_seconds = retry_after_seconds
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._running = 0
        self._waiting = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block; raise ServiceBusy when no slot and no queue room."""
        if self._running >= self.max_concurrency and self._waiting >= self.max_queue:
            raise ServiceBusy(self.retry_after_seconds, self.what)
        self._waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self._waiting -= 1
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._semaphore.release()
