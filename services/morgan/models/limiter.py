"""Bounded concurrency: N requests run, up to M wait, the rest are refused at once (503).
A waiter whose client closed its connection leaves the queue unrun (499)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from morgan.models.errors import ClientGone, ServiceBusy
from morgan.shared.client_gone import client_gone


def _check_sizes(max_concurrency: int, max_queue: int) -> None:
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    if max_queue < 0:
        raise ValueError("max_queue must be 0 or more")


class ConcurrencyLimiter:
    """``max_concurrency`` requests run at a time; ``max_queue`` more wait; others get 503.

    Waiters are served first come, first served. ``resize`` changes both bounds while
    requests run: a larger ``max_concurrency`` starts waiters at once, a smaller one lets
    running requests finish and starts no new ones until fewer than the new bound run."""

    def __init__(
        self, max_concurrency: int, max_queue: int, *, what: str, retry_after_seconds: int = 1
    ) -> None:
        _check_sizes(max_concurrency, max_queue)
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.what = what
        self.retry_after_seconds = retry_after_seconds
        self._running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def resize(self, max_concurrency: int, max_queue: int) -> None:
        _check_sizes(max_concurrency, max_queue)
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._start_waiters()

    def _start_waiters(self) -> None:
        while self._waiters and self._running < self.max_concurrency:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._running += 1  # the slot is the waiter's from here on
                waiter.set_result(None)

    async def _wait_unless_client_gone(self, waiter: asyncio.Future[None]) -> None:
        gone = client_gone()
        if gone is None:
            await waiter
            return
        gone_wait = asyncio.ensure_future(gone.wait())
        either: list[asyncio.Future[Any]] = [waiter, gone_wait]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone_wait.cancel()
        if gone.is_set():  # even when the slot came at the same moment: nobody waits for it
            raise ClientGone(self.what)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block; raise ServiceBusy when no slot and no queue room."""
        if self._running < self.max_concurrency and not self.waiting:
            self._running += 1
        else:
            if self.waiting >= self.max_queue:
                raise ServiceBusy(self.retry_after_seconds, self.what)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await self._wait_unless_client_gone(waiter)
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._running -= 1  # started, then cancelled before it could run
                    self._start_waiters()
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
        try:
            yield
        finally:
            self._running -= 1
            self._start_waiters()
