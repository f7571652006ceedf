"""Helpers for the service-fabric tests: real uvicorn servers on loopback, polling."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI
from morgan.shared.discovery import ConsulServiceDiscovery, ServiceEndpoint, _CacheEntry

from tests.harness.ports import LOOPBACK, free_port

T = TypeVar("T")


def unique_name(prefix: str = "morgan-t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def eventually(
    check: Callable[[], T | None],
    *,
    timeout: float = 15.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def aeventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 15.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except Exception as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class UvicornThread:
    """A real uvicorn server for `app` on a free loopback port, in a background thread."""

    def __init__(
        self,
        app: FastAPI,
        port: int | None = None,
        uvicorn_config: uvicorn.Config | None = None,
        **config: Any,
    ) -> None:
        self.port = uvicorn_config.port if uvicorn_config else (port or free_port())
        self.host = LOOPBACK
        self.url = f"http://{self.host}:{self.port}"
        self.config = uvicorn_config or uvicorn.Config(
            app,
            host=self.host,
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            **config,
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> UvicornThread:
        self.thread.start()
        eventually(lambda: self.server.started, timeout=15, what=f"uvicorn on {self.port}")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def kill(self) -> None:
        """Stop at once, dropping connections (as close to a crash as a thread allows)."""
        self.server.force_exit = True
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> UvicornThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(app: FastAPI, **config: Any) -> Iterator[UvicornThread]:
    with UvicornThread(app, **config) as srv:
        yield srv


def seed_endpoints(
    discovery: ConsulServiceDiscovery, name: str, ports: list[int]
) -> list[ServiceEndpoint]:
    """Put loopback endpoints into a discovery cache (for tests of client logic alone)."""
    eps = [ServiceEndpoint(name, f"{name}-{p}", LOOPBACK, p) for p in ports]
    discovery._cache[name] = _CacheEntry(eps, discovery.clock(), None)
    return eps
