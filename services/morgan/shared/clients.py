"""Who a request comes from (its IP address), for per-client budgets.

A client is the connection's peer, or the rightmost X-Forwarded-For entry when the peer is
a trusted proxy (the gateway)."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from starlette.types import Scope


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[str]) -> str:
    """The client's IP: the peer, or the last hop X-Forwarded-For names when the peer is
    one of the trusted proxies (addresses or networks)."""
    if not peer:
        return "unknown"
    if forwarded_for and _is_trusted(peer, trusted):
        last = forwarded_for.split(",")[-1].strip()
        if last:
            return last
    return peer


def _is_trusted(peer: str, trusted: Sequence[str]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in trusted)


def client_of_scope(scope: Scope, trusted: Sequence[str]) -> str:
    peer = scope.get("client")
    forwarded = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                      if k == b"x-forwarded-for"), None)  # fmt: skip
    return client_address(peer[0] if peer else None, forwarded, trusted)


class FailureBudget:
    """Failed API-key checks per client over the last minute. Past `limit` failures a
    client is answered 429 until its oldest failure is a minute old, before any Consul read
    or scrypt run: bad keys cannot be used to load a service or to guess at speed."""

    WINDOW_S = 60.0
    MAX_CLIENTS = 10_000

    def __init__(
        self, limit: Callable[[], int], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client, deque())
        while times and now - times[0] >= self.WINDOW_S:
            times.popleft()
        return times

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try a key again, or None when it may now."""
        with self._lock:
            now = self.clock()
            times = self._recent(client, now)
            if len(times) < self.limit():
                return None
            return max(1, int(times[-self.limit()] + self.WINDOW_S - now + 0.999))

    def failed(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            if client not in self._failures and len(self._failures) >= self.MAX_CLIENTS:
                self._failures = {c: t for c in list(self._failures)
                                  if (t := self._recent(c, now))}  # fmt: skip
            times = self._recent(client, now)
            times.append(now)
            while len(times) > self.limit():
                times.popleft()
            self._failures[client] = times
