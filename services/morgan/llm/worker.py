"""Running a blocking generator loop in a worker thread and reading what it emits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()


async def from_thread(
    produce: Callable[[Callable[[T], None]], None], name: str = "llm-generate"
) -> AsyncIterator[T]:
    """Run `produce(emit)` in a daemon thread; yield each item it emits, in order, and
    raise here what it raised there. The caller stops the thread (e.g. a cancel event)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def emit(item: T) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def run() -> None:
        try:
            produce(emit)
            loop.call_soon_threadsafe(queue.put_nowait, _END)
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    while True:
        item = await queue.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
