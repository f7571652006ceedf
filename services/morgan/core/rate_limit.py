"""Per-client rate limits of core's API: requests per minute, and audio turns per minute.

A client is its IP address: the connection's peer, or the rightmost X-Forwarded-For
entry when the peer is a trusted proxy (the gateway; `trusted_proxies`). Budgets are
fixed one-minute windows counted in Redis, so every core behind the gateway shares
them; while Redis is unavailable each core counts on its own (a client then gets at
most the budget per core, never an error). Past the budget: 429 with Retry-After (the
seconds until the window ends). HTTP requests under /api/ and every WebSocket turn
count against `rate_limit_per_minute`; audio turns (HTTP or WebSocket) also against
`audio_rate_limit_per_minute`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from morgan.core.config import CoreSettings
from morgan.core.exceptions import TurnError
from morgan.core.metrics import RATE_LIMITED_TOTAL
from morgan.core.storage.cache import ContextCache
from morgan.shared.clients import client_of_scope

Bucket = Literal["api", "audio"]
WINDOW_S = 60
_KEY_PREFIX = "morgan:rl:"


class RateLimitedError(TurnError):
    status_code = 429
    error = "too many requests"


class RateLimiter:
    def __init__(
        self,
        cache: ContextCache,
        settings: Callable[[], CoreSettings],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self.settings = settings
        self.clock = clock
        self._local: dict[str, int] = {}
        self._local_window = -1

    def _limit(self, bucket: Bucket) -> int:
        s = self.settings()
        return s.rate_limit_per_minute if bucket == "api" else s.audio_rate_limit_per_minute

    async def _count(self, key: str, window: int) -> int:
        counted = await self.cache.count(key, WINDOW_S)
        if counted is not None:
            return counted
        if window != self._local_window:
            self._local, self._local_window = {}, window
        self._local[key] = self._local.get(key, 0) + 1
        return self._local[key]

    async def check(self, client: str, *buckets: Bucket) -> None:
        """Count one request of `client` in each bucket; RateLimitedError past a budget."""
        now = self.clock()
        window = int(now // WINDOW_S)
        for bucket in buckets:
            limit = self._limit(bucket)
            if limit <= 0:
                continue
            used = await self._count(f"{_KEY_PREFIX}{bucket}:{{{client}}}:{window}", window)
            if used > limit:
                RATE_LIMITED_TOTAL.labels(bucket).inc()
                retry = max(1, int((window + 1) * WINDOW_S - now + 0.999))
                what = "requests" if bucket == "api" else "audio turns"
                name = "rate_limit_per_minute" if bucket == "api" else "audio_rate_limit_per_minute"
                raise RateLimitedError(
                    f"{client} sent more than {limit} {what} this minute ({name}); retry after"
                    f" {retry} s",
                    headers={"Retry-After": str(retry)},
                )


def buckets_of(path: str) -> tuple[Bucket, ...]:
    if path == "/api/audio":
        return ("api", "audio")
    if path.startswith("/api/"):
        return ("api",)
    return ()


class RateLimitMiddleware:
    """Counts HTTP requests under /api/ before anything else reads them (authentication
    included), and answers 429 past the client's budget."""

    def __init__(self, app: ASGIApp, *, limiter: Callable[[], RateLimiter | None]) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.limiter() if scope["type"] == "http" else None
        buckets = buckets_of(scope["path"]) if limiter is not None else ()
        if limiter is None or not buckets:
            await self.app(scope, receive, send)
            return
        client = client_of_scope(scope, limiter.settings().trusted_proxies)
        try:
            await limiter.check(client, *buckets)
        except RateLimitedError as exc:
            body = json.dumps({"error": exc.message, "detail": exc.error}).encode()
            extra = [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode()), *extra]  # fmt: skip
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
