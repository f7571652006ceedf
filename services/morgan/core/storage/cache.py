"""ContextCache: cache-aside for conversation context in Redis (Cluster or standalone).

Redis only ever speeds things up. Every call catches Redis errors and reports a
miss, so a Redis outage costs latency, never a failed request. After an error
the cache stays off for ``cooldown_s`` so a dead Redis is not asked on every
request; the next call after that tries again.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from morgan.core.metrics import CACHE_REQUESTS_TOTAL
from morgan.core.storage.models import Turn

log = logging.getLogger(__name__)

_KEY_PREFIX = "morgan:ctx:"


def context_key(conversation_id: str) -> str:
    # The hash tag keeps one conversation's key on one slot whatever we add later.
    return f"{_KEY_PREFIX}{{{conversation_id}}}"


def parse_nodes(nodes: Sequence[str]) -> list[tuple[str, int]]:
    """``["10.0.0.1:6379", ...]`` -> ``[("10.0.0.1", 6379), ...]`` with a clear error."""
    parsed: list[tuple[str, int]] = []
    for node in nodes:
        host, sep, port = node.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"redis node {node!r} is not host:port; write e.g. 'redis-1:6379'")
        parsed.append((host, int(port)))
    return parsed


@dataclass(frozen=True)
class TlsFiles:
    """CA, certificate and key core presents to TLS-only Redis nodes."""

    ca: str
    cert: str
    key: str


class ContextCache:
    def __init__(
        self,
        client: Redis | RedisCluster | None,
        *,
        ttl_s: int = 3600,
        cooldown_s: float = 2.0,
    ) -> None:
        self._client = client
        self.ttl_s = ttl_s
        self._cooldown_s = cooldown_s
        self._down_until = 0.0
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self._access: Counter[str] = Counter()

    @classmethod
    def cluster(
        cls,
        nodes: Sequence[tuple[str, int]],
        *,
        ttl_s: int = 3600,
        timeout_s: float = 1.0,
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> ContextCache:
        ssl: dict[str, Any] = {}
        if tls is not None:
            ssl = {"ssl": True, "ssl_ca_certs": tls.ca, "ssl_certfile": tls.cert,
                   "ssl_keyfile": tls.key}  # fmt: skip
        client = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in nodes],
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            password=password,
            # One quick retry per call; the cache must fail fast, not hang.
            retry=Retry(NoBackoff(), 1),
            **ssl,
        )
        return cls(client, ttl_s=ttl_s)

    @classmethod
    def standalone(cls, url: str, *, ttl_s: int = 3600, timeout_s: float = 1.0) -> ContextCache:
        client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(client, ttl_s=ttl_s)

    @classmethod
    def disabled(cls) -> ContextCache:
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def _available(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    def _failed(self, op: str, exc: BaseException) -> None:
        self.errors += 1
        CACHE_REQUESTS_TOTAL.labels("error").inc()
        self._down_until = time.monotonic() + self._cooldown_s
        log.warning(
            "redis: %s failed (%s: %s); serving from PostgreSQL for the next %.0fs",
            op,
            type(exc).__name__,
            exc,
            self._cooldown_s,
        )

    async def get_context(self, conversation_id: str) -> list[Turn] | None:
        """Cached turns (oldest first), or None on a miss or when Redis is unavailable."""
        self._access[conversation_id] += 1
        if not self._available():
            self.misses += 1
            return None
        assert self._client is not None
        try:
            raw = await self._client.get(context_key(conversation_id))
        except Exception as exc:  # any cache failure is a miss (redis-py can raise oddities)
            self._failed("get", exc)
            self.misses += 1
            return None
        if raw is None:
            self.misses += 1
            CACHE_REQUESTS_TOTAL.labels("miss").inc()
            return None
        try:
            turns = [Turn.from_cache(item) for item in json.loads(raw)]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("redis: dropping unreadable context for %s (%s)", conversation_id, exc)
            await self.invalidate(conversation_id)
            self.misses += 1
            return None
        self.hits += 1
        CACHE_REQUESTS_TOTAL.labels("hit").inc()
        return turns

    async def set_context(self, conversation_id: str, turns: Sequence[Turn]) -> bool:
        if not self._available():
            return False
        assert self._client is not None
        payload: list[dict[str, Any]] = [t.to_cache() for t in turns]
        try:
            await self._client.set(context_key(conversation_id), json.dumps(payload), ex=self.ttl_s)
        except Exception as exc:  # any cache failure is a miss (redis-py can raise oddities)
            self._failed("set", exc)
            return False
        return True

    async def invalidate(self, conversation_id: str) -> bool:
        if not self._available():
            return False
        assert self._client is not None
        try:
            await self._client.delete(context_key(conversation_id))
        except Exception as exc:  # any cache failure is a miss (redis-py can raise oddities)
            self._failed("delete", exc)
            return False
        return True

    async def ttl(self, conversation_id: str) -> int | None:
        if not self._available():
            return None
        assert self._client is not None
        try:
            return int(await self._client.ttl(context_key(conversation_id)))
        except Exception as exc:  # any cache failure is a miss (redis-py can raise oddities)
            self._failed("ttl", exc)
            return None

    async def count(self, key: str, window_s: int) -> int | None:
        """Add one to a counter that lives `window_s` seconds (rate limits shared by every
        core); None when Redis is unavailable."""
        if not self._available():
            return None
        assert self._client is not None
        try:
            value = await self._client.incr(key)
            if value == 1:
                await self._client.expire(key, window_s + 1)
        except Exception as exc:  # any cache failure: the caller counts locally
            self._failed("incr", exc)
            return None
        return int(value)

    async def ping(self) -> bool:
        if self._client is None:
            return False
        try:
            return bool(await self._client.ping())
        except Exception:
            return False

    def take_hot(self, n: int) -> list[str]:
        """The ``n`` most read conversations since the last call; resets the counts."""
        hot = [cid for cid, _ in self._access.most_common(n)]
        self._access.clear()
        return hot

    async def close(self) -> None:
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception as exc:  # any cache failure is a miss (redis-py can raise oddities)
                log.debug("redis: close failed: %s", exc)
