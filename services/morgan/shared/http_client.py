"""Calling another Morgan service by its Consul name, with failover and retries.

- Connection errors and 502/503/504 move the call to the next healthy instance.
- A *busy* instance (503 or 429 with Retry-After: Morgan's services send it only when they
  refuse before doing any work) is not a failed one: the call goes to the next instance,
  and once every instance said busy it waits the Retry-After (with jitter, so callers
  spread out) and tries again, for as long as the call's deadline leaves time to be
  served. Only then does the busy answer reach the caller.
- Backoff between attempts: exponential with full jitter (base 100 ms, cap 2 s), at most
  5 attempts, all within one overall deadline.
- A non-idempotent request (POST, PATCH) is retried only when it was never sent (connection
  refused/failed) or when it carries an `Idempotency-Key`.
- `X-Request-ID` of the current request is propagated.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from morgan.shared.discovery import ConsulServiceDiscovery, ServiceEndpoint
from morgan.shared.logging import REQUEST_ID_HEADER, get_request_id
from morgan.shared.metrics import UPSTREAM_BUSY_WAITS_TOTAL, UPSTREAM_RETRIES_TOTAL

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({502, 503, 504})
BUSY_STATUSES = frozenset({429, 503})
# Longest Retry-After honoured in one wait, and the jitter added to it (a fraction).
MAX_BUSY_WAIT_S = 10.0
BUSY_JITTER = 0.25
IDEMPOTENCY_HEADER = "Idempotency-Key"

# A LAN peer that is up accepts a connection in milliseconds; one whose host is gone (or
# cut off) never answers the SYN, and waiting the whole stage timeout for it would spend
# the turn's budget before the next instance is tried.
CONNECT_TIMEOUT_S = 3.0

# Errors raised before a single byte of the request left this process.
NOT_SENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


class UpstreamError(RuntimeError):
    """A call to another service failed on every instance tried."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service


def busy_retry_after(resp: httpx.Response) -> float | None:
    """Seconds a busy instance asks to wait (503/429 with a numeric Retry-After), or None."""
    if resp.status_code not in BUSY_STATUSES:
        return None
    try:
        seconds = float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_BUSY_WAIT_S)


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)) for attempt 0, 1, ..."""
    return rng() * min(cap, base * (2**attempt))


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


class MorganHTTPClient:
    """Async HTTP client addressing services by Consul name (e.g. `morgan-llm`)."""

    def __init__(
        self,
        discovery: ConsulServiceDiscovery,
        *,
        timeout: float = 30.0,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        deadline: float = 60.0,
        max_attempts: int = 5,
        backoff_base: float = 0.1,
        backoff_cap: float = 2.0,
        client_cert: tuple[str | Path, str | Path] | None = None,
        ca_cert: str | Path | None = None,
        caller: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.discovery = discovery
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.deadline = deadline
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.caller = caller
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        verify: ssl.SSLContext | bool = True
        # What other clients of the same services (a WebSocket to morgan-vad) connect with.
        self.ssl_context: ssl.SSLContext | None = None
        if ca_cert is not None or client_cert is not None:
            ctx = ssl.create_default_context(cafile=str(ca_cert) if ca_cert else None)
            # Instances are addressed by IP/host from Consul; trust comes from the private CA.
            ctx.check_hostname = False
            if client_cert is not None:
                ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
            verify = self.ssl_context = ctx
        self._client = httpx.AsyncClient(
            timeout=self._limits(timeout), verify=verify, transport=transport
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> MorganHTTPClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- helpers -----------------------------------------------------------------------------

    def _headers(
        self, headers: Mapping[str, str] | None, idempotency_key: str | None
    ) -> dict[str, str]:
        out = dict(headers or {})
        lower = {k.lower() for k in out}
        rid = get_request_id()
        if rid and REQUEST_ID_HEADER.lower() not in lower:
            out[REQUEST_ID_HEADER] = rid
        if idempotency_key and IDEMPOTENCY_HEADER.lower() not in lower:
            out[IDEMPOTENCY_HEADER] = idempotency_key
        return out

    @staticmethod
    def _may_resend(method: str, headers: Mapping[str, str]) -> bool:
        if method.upper() in IDEMPOTENT_METHODS:
            return True
        return any(k.lower() == IDEMPOTENCY_HEADER.lower() for k in headers)

    def _end(self, deadline: float | None) -> float:
        end = self.clock() + self.deadline
        return end if deadline is None else min(end, deadline)

    async def _busy_wait(self, service: str, resp: httpx.Response, end: float,
                         ep: ServiceEndpoint) -> bool:  # fmt: skip
        """Wait out a busy answer when the deadline leaves time to be served after; False
        when it does not (the busy answer is final)."""
        wait = busy_retry_after(resp)
        if wait is None:
            return False
        wait *= 1 + BUSY_JITTER * self.rng()
        expected = self.discovery.latency(ep) or 0.0
        if self.clock() + wait + expected >= end:
            return False
        UPSTREAM_BUSY_WAITS_TOTAL.labels(service).inc()
        await self.sleep(wait)
        return True

    async def _all_tried(self, service: str, tried: set[str]) -> bool:
        return {e.id for e in await self.discovery.discover(service)} <= tried

    async def _attempts(
        self, service: str, end: float
    ) -> AsyncIterator[tuple[int, ServiceEndpoint, float, set[str]]]:
        """Yields (attempt, endpoint, per-attempt timeout, instances tried) until the caller
        stops or limits hit."""
        tried: set[str] = set()
        for attempt in range(self.max_attempts):
            remaining = end - self.clock()
            if remaining <= 0:
                return
            endpoint = await self.discovery.pick(service, exclude=frozenset(tried))
            tried.add(endpoint.id)
            yield attempt, endpoint, min(self.timeout, remaining), tried
            if attempt + 1 >= self.max_attempts:
                return
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap, self.rng)
            if self.clock() + delay >= end:
                return
            await self.sleep(delay)

    # -- public API --------------------------------------------------------------------------

    async def request(
        self,
        service_name: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        files: Any = None,
        data: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> httpx.Response:
        """Send one request to a healthy instance of `service_name`, failing over as needed.

        Returns the response (any status; 502/503/504 only once no retry is left, a busy
        503 once the deadline leaves no time to wait it out). `deadline` (on this client's
        clock) ends the call earlier than its own `deadline` seconds. Raises
        `UpstreamError` when no instance could be reached, and
        `morgan.shared.discovery.NoHealthyInstanceError` when Consul knows none.
        """
        end = self._end(deadline)
        kwargs = dict(json=json, content=content, files=files, data=data, params=params)
        hdrs = self._headers(headers, idempotency_key)
        while True:
            resp, ep = await self._round(service_name, method, path, kwargs, hdrs, timeout, end)
            if not await self._busy_wait(service_name, resp, end, ep):
                return resp

    async def _round(
        self, service_name: str, method: str, path: str, kwargs: dict[str, Any],
        hdrs: dict[str, str], timeout: float | None, end: float,
    ) -> tuple[httpx.Response, ServiceEndpoint]:  # fmt: skip
        """One pass over the instances: the answer, and the instance that gave it."""
        resend_ok = self._may_resend(method, hdrs)
        last_exc: Exception | None = None
        last: tuple[httpx.Response, ServiceEndpoint] | None = None
        async for _attempt, ep, attempt_timeout, tried in self._attempts(service_name, end):
            t = min(timeout, attempt_timeout) if timeout else attempt_timeout
            started = self.clock()
            try:
                resp = await self._client.request(
                    method, ep.url + path, headers=hdrs, timeout=self._limits(t), **kwargs
                )
            except NOT_SENT_ERRORS as exc:
                self.discovery.record_failure(ep)
                last_exc, last = exc, None
                UPSTREAM_RETRIES_TOTAL.labels(service_name, "connect").inc()
                continue
            except httpx.TransportError as exc:
                self.discovery.record_failure(ep)
                if not resend_ok:
                    raise UpstreamError(
                        service_name,
                        self._msg(
                            f"{method} {path} to {service_name} at {ep.url} failed after "
                            f"it was sent ({type(exc).__name__}: {exc}); not retried "
                            "because it is not idempotent (send an Idempotency-Key to "
                            "allow retries)"
                        ),
                    ) from exc
                last_exc, last = exc, None
                UPSTREAM_RETRIES_TOTAL.labels(service_name, "transport").inc()
                continue
            if busy_retry_after(resp) is not None:
                # Refused before any work: another instance may take it, whatever the method.
                last, last_exc = (resp, ep), None
                if await self._all_tried(service_name, tried):
                    return resp, ep
                UPSTREAM_RETRIES_TOTAL.labels(service_name, "busy").inc()
                continue
            if resp.status_code in RETRY_STATUSES:
                self.discovery.record_failure(ep)
                last, last_exc = (resp, ep), None
                if not resend_ok:
                    return resp, ep
                UPSTREAM_RETRIES_TOTAL.labels(service_name, str(resp.status_code)).inc()
                continue
            self.discovery.record_latency(ep, self.clock() - started)
            return resp, ep
        if last is not None:
            return last
        raise UpstreamError(
            service_name,
            self._msg(
                f"could not reach any instance of {service_name} ({last_exc}); is the "
                f"{service_name.removeprefix('morgan-')} service running and healthy in "
                "Consul?"
            ),
        ) from last_exc

    def _limits(self, seconds: float) -> httpx.Timeout:
        """`seconds` for the whole exchange, but a connection must open within
        connect_timeout: an instance whose host is gone costs that, then the next one."""
        return httpx.Timeout(seconds, connect=min(seconds, self.connect_timeout))

    def _msg(self, text: str) -> str:
        return f"{self.caller.removeprefix('morgan-')}: {text}" if self.caller else text

    @contextlib.asynccontextmanager
    async def stream(
        self,
        service_name: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Open a streaming response (SSE, chunked audio). Failover happens only before the
        response headers arrive; once the body streams, errors reach the caller. Busy
        instances are waited out as in `request` (a final busy answer comes back read)."""
        hdrs = self._headers(headers, idempotency_key)
        resend_ok = self._may_resend(method, hdrs)
        end = self._end(deadline)
        last_exc: Exception | None = None
        while True:
            busy: tuple[httpx.Response, ServiceEndpoint] | None = None
            async for _attempt, ep, attempt_timeout, tried in self._attempts(service_name, end):
                t = min(timeout, attempt_timeout) if timeout else attempt_timeout
                req = self._client.build_request(
                    method, ep.url + path, json=json, content=content, params=params,
                    headers=hdrs, timeout=self._limits(t),
                )  # fmt: skip
                started = self.clock()
                try:
                    resp = await self._client.send(req, stream=True)
                except NOT_SENT_ERRORS as exc:
                    self.discovery.record_failure(ep)
                    last_exc = exc
                    continue
                except httpx.TransportError as exc:
                    self.discovery.record_failure(ep)
                    if not resend_ok:
                        raise UpstreamError(
                            service_name,
                            self._msg(
                                f"{method} {path} to {service_name} failed after it was sent: {exc}"
                            ),
                        ) from exc
                    last_exc = exc
                    continue
                if busy_retry_after(resp) is not None:
                    await resp.aread()
                    await resp.aclose()
                    busy = (resp, ep)
                    if await self._all_tried(service_name, tried):
                        break
                    UPSTREAM_RETRIES_TOTAL.labels(service_name, "busy").inc()
                    continue
                if resp.status_code in RETRY_STATUSES and resend_ok:
                    await resp.aclose()
                    self.discovery.record_failure(ep)
                    last_exc = httpx.HTTPStatusError(
                        f"{resp.status_code} from {ep.url}", request=req, response=resp
                    )
                    continue
                self.discovery.record_latency(ep, self.clock() - started)
                try:
                    yield resp
                finally:
                    await resp.aclose()
                return
            if busy is not None:
                if await self._busy_wait(service_name, busy[0], end, busy[1]):
                    continue
                yield busy[0]
                return
            raise UpstreamError(
                service_name,
                self._msg(
                    f"could not open a stream to any instance of {service_name} "
                    f"({last_exc}); is the service running and healthy in Consul?"
                ),
            ) from last_exc
