"""Finding healthy instances of a service in Consul, with a cache, a watch and EWMA latency.

- Only instances whose checks all pass are returned.
- Results are cached (30 s by default); a blocking-query watch per service name refreshes the
  cache as soon as Consul's catalog changes.
- When Consul is unreachable the last known instances are served for up to 5 minutes
  (configurable), then `NoHealthyInstanceError` says what is wrong.
- `pick()` goes round-robin over healthy instances, preferring those with lower observed latency.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import consul

from morgan.shared.consul_client import (
    CONSUL_UNREACHABLE_ERRORS,
    ConsulClientFactory,
    until_answered,
)

log = logging.getLogger(__name__)

EWMA_ALPHA = 0.3
FAILURE_PENALTY_SECONDS = 5.0
# Instances within this factor of the fastest one share the round-robin.
PREFERENCE_FACTOR = 2.0


class DiscoveryError(RuntimeError):
    """Base of discovery errors."""


class NoHealthyInstanceError(DiscoveryError):
    """No passing instance of a service is known (or Consul has been unreachable too long)."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service


@dataclass(frozen=True)
class ServiceEndpoint:
    """One healthy instance of a service as Consul sees it."""

    service: str
    id: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def scheme(self) -> str:
        return "https" if self.meta.get("scheme") == "https" or "https" in self.tags else "http"

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}"


def _short(service: str) -> str:
    return service.removeprefix("morgan-")


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago"


def endpoints_from_health(service: str, entries: list[dict[str, Any]]) -> list[ServiceEndpoint]:
    """Turn /v1/health/service entries into endpoints, keeping only all-passing ones."""
    result = []
    for entry in entries:
        checks = entry.get("Checks") or []
        if any(c.get("Status") != "passing" for c in checks):
            continue
        svc = entry["Service"]
        address = svc.get("Address") or entry.get("Node", {}).get("Address", "")
        result.append(
            ServiceEndpoint(
                service=service,
                id=svc["ID"],
                address=address,
                port=int(svc["Port"]),
                tags=tuple(svc.get("Tags") or ()),
                meta=dict(svc.get("Meta") or {}),
            )
        )
    result.sort(key=lambda e: e.id)
    return result


@dataclass
class _CacheEntry:
    endpoints: list[ServiceEndpoint]
    fetched_at: float  # clock() of the last successful answer from Consul
    index: str | None = None


class ConsulServiceDiscovery:
    """Discovers passing instances of Morgan services through Consul."""

    def __init__(
        self,
        consul_addr: str | ConsulClientFactory | None = None,
        *,
        cache_seconds: float = 30.0,
        stale_max_seconds: float = 300.0,
        watch: bool = True,
        watch_wait_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        caller: str | None = None,
        require_tls: bool = False,
    ) -> None:
        if isinstance(consul_addr, ConsulClientFactory):
            self.consul = consul_addr
        else:
            self.consul = ConsulClientFactory.from_env(consul_addr)
        self.cache_seconds = cache_seconds
        self.stale_max_seconds = stale_max_seconds
        self.watch_enabled = watch
        self.watch_wait_seconds = watch_wait_seconds
        self.clock = clock
        self.caller = caller
        # With internal TLS on, an instance registered as plain HTTP is refused: whoever
        # registered it is not a Morgan service of this fleet (or one misconfigured).
        self.require_tls = require_tls
        self._refused: dict[str, set[str]] = {}
        self._client = self.consul.client()
        self._cache: dict[str, _CacheEntry] = {}
        self._lock = threading.Lock()
        self._ewma: dict[str, float] = {}
        self._rr: dict[str, int] = {}
        self._watchers: dict[str, threading.Thread] = {}
        self._stop = threading.Event()

    # -- queries -----------------------------------------------------------------------------

    def _query(self, name: str) -> tuple[str | None, list[ServiceEndpoint]]:
        index, entries = self._client.health.service(name, passing=True)
        return index, self._usable(name, entries or [])

    def _usable(self, name: str, entries: list[dict[str, Any]]) -> list[ServiceEndpoint]:
        endpoints = endpoints_from_health(name, entries)
        if not self.require_tls:
            return endpoints
        refused = self._refused.setdefault(name, set())
        for plain in (e for e in endpoints if e.scheme != "https" and e.id not in refused):
            refused.add(plain.id)
            log.warning(
                "%sinstance %s of %s at %s is registered without TLS while internal TLS is "
                "on; it is not used (a Morgan service with tls_* set registers as https)",
                self._prefix(), plain.id, name, plain.url,
            )  # fmt: skip
        return [e for e in endpoints if e.scheme == "https"]

    async def discover(self, name: str) -> list[ServiceEndpoint]:
        """Passing instances of `name`; raises `NoHealthyInstanceError` when there are none."""
        now = self.clock()
        with self._lock:
            cached = self._cache.get(name)
        # An empty answer is not cached: the next call asks Consul again.
        if cached is not None and cached.endpoints and now - cached.fetched_at < self.cache_seconds:
            return list(cached.endpoints)
        try:
            index, endpoints = await asyncio.to_thread(self._query, name)
        except (*CONSUL_UNREACHABLE_ERRORS, consul.ConsulException) as exc:
            return self._stale_or_raise(name, cached, exc)
        entry = _CacheEntry(endpoints, self.clock(), index)
        with self._lock:
            self._cache[name] = entry
        self._ensure_watch(name)
        return self._non_empty(name, entry)

    def _non_empty(self, name: str, entry: _CacheEntry) -> list[ServiceEndpoint]:
        if entry.endpoints:
            return list(entry.endpoints)
        refused = sorted(self._refused.get(name, ()))
        if refused:
            raise NoHealthyInstanceError(
                name,
                f"{self._prefix()}no healthy TLS instance of {name} in Consul; refused "
                f"{', '.join(refused)}: registered as plain HTTP while internal TLS is on",
            )
        raise NoHealthyInstanceError(
            name,
            f"{self._prefix()}no healthy instance of {name} in Consul; "
            f"is the {_short(name)} host up? (check `consul catalog services` and the "
            f"service's /health)",
        )

    def _stale_or_raise(
        self, name: str, cached: _CacheEntry | None, exc: BaseException
    ) -> list[ServiceEndpoint]:
        now = self.clock()
        if cached is not None and cached.endpoints:
            age = now - cached.fetched_at
            if age <= self.stale_max_seconds:
                log.warning(
                    "Consul unreachable; serving last known instances of %s (%s)",
                    name,
                    _ago(age),
                    extra={"consul_error": str(exc)},
                )
                return list(cached.endpoints)
            raise NoHealthyInstanceError(
                name,
                f"{self._prefix()}no healthy instance of {name} in Consul (last seen "
                f"{_ago(age)}; Consul at {self.consul.addr} unreachable: {exc}); is the "
                f"{_short(name)} host up, and is the Consul agent running?",
            )
        raise NoHealthyInstanceError(
            name,
            f"{self._prefix()}cannot look up {name}: Consul at {self.consul.addr} is "
            f"unreachable ({exc}); start the Consul agent or set CONSUL_HTTP_ADDR",
        )

    def _prefix(self) -> str:
        return f"{_short(self.caller)}: " if self.caller else ""

    # -- watch -------------------------------------------------------------------------------

    def _ensure_watch(self, name: str) -> None:
        if not self.watch_enabled or self._stop.is_set():
            return
        with self._lock:
            if name in self._watchers:
                return
            t = threading.Thread(
                target=self._watch_loop, args=(name,), name=f"discovery-watch-{name}", daemon=True
            )
            self._watchers[name] = t
        t.start()

    def _watch_loop(self, name: str) -> None:
        client = self.consul.client()
        wait = f"{max(1, int(self.watch_wait_seconds))}s"
        while not self._stop.is_set():
            with self._lock:
                entry = self._cache.get(name)
            index = entry.index if entry else None
            query = functools.partial(
                client.health.service, name, passing=True, index=index, wait=wait
            )
            answer = until_answered(
                query,
                self._stop,
                f"discovery watch for {name}",
            )
            if answer is None:
                return
            new_index, entries = answer
            endpoints = self._usable(name, entries or [])
            # A restarted Consul resets its index; start over rather than wait forever.
            if index is not None and new_index is not None and int(new_index) < int(index):
                new_index = None
            with self._lock:
                self._cache[name] = _CacheEntry(endpoints, self.clock(), new_index)

    def invalidate(self, name: str | None = None) -> None:
        """Forget cached instances (of `name`, or of every service)."""
        with self._lock:
            if name is None:
                self._cache.clear()
            else:
                self._cache.pop(name, None)

    def close(self) -> None:
        """Stop the watches (their threads end within one blocking-query wait)."""
        self._stop.set()

    # -- choosing ----------------------------------------------------------------------------

    def record_latency(self, endpoint: ServiceEndpoint, seconds: float) -> None:
        """Feed an observed call latency into the endpoint's EWMA."""
        with self._lock:
            old = self._ewma.get(endpoint.id)
            self._ewma[endpoint.id] = (
                seconds if old is None else EWMA_ALPHA * seconds + (1 - EWMA_ALPHA) * old
            )

    def record_failure(self, endpoint: ServiceEndpoint) -> None:
        """Count a failed call as a slow one so the endpoint is avoided for a while."""
        self.record_latency(endpoint, FAILURE_PENALTY_SECONDS)

    def latency(self, endpoint: ServiceEndpoint) -> float | None:
        with self._lock:
            return self._ewma.get(endpoint.id)

    def select(
        self, name: str, endpoints: list[ServiceEndpoint], exclude: frozenset[str] = frozenset()
    ) -> ServiceEndpoint:
        """Round-robin among the fastest of `endpoints` (ignoring ids in `exclude` if possible)."""
        if not endpoints:
            raise NoHealthyInstanceError(name, f"no healthy instance of {name}")
        pool = [e for e in endpoints if e.id not in exclude] or list(endpoints)
        with self._lock:
            lat = {e.id: self._ewma.get(e.id) for e in pool}
            known = [v for v in lat.values() if v is not None]
            if known:
                best = min(known)
                limit = max(best * PREFERENCE_FACTOR, best + 0.005)
                # Unmeasured instances stay in the pool so they get measured.
                pool = [e for e in pool if lat[e.id] is None or lat[e.id] <= limit]  # type: ignore[operator]
            n = self._rr.get(name, 0)
            self._rr[name] = n + 1
        return pool[n % len(pool)]

    async def pick(self, name: str, exclude: frozenset[str] = frozenset()) -> ServiceEndpoint:
        """One healthy instance of `name` (see `select`)."""
        return self.select(name, await self.discover(name), exclude)
