"""One way to build a Consul client, honouring Consul's standard environment variables.

`CONSUL_HTTP_ADDR` (``host:port`` or ``scheme://host:port``), `CONSUL_HTTP_TOKEN` (ACLs; or
`CONSUL_HTTP_TOKEN_FILE`, the file that holds it),
`CONSUL_CACERT`, `CONSUL_CLIENT_CERT` and `CONSUL_CLIENT_KEY` (TLS to the agent).
py-consul is synchronous: call it from async code through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import consul
import requests
import tenacity

from morgan.shared.secret_files import secret_from_env

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_CONSUL_ADDR = "127.0.0.1:8500"

# Errors that mean "Consul did not answer" (as opposed to "Consul said no").
CONSUL_UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    consul.Timeout,
    ConnectionError,
    OSError,
)


class ConsulAddressError(ValueError):
    """CONSUL_HTTP_ADDR (or an explicit address) cannot be parsed."""


@dataclass(frozen=True)
class ConsulClientFactory:
    """Connection settings for the Consul agent; `client()` builds a py-consul client."""

    scheme: str = "http"
    host: str = "127.0.0.1"
    port: int = 8500
    token: str | None = None
    cacert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    timeout: float = 10.0

    @classmethod
    def from_env(cls, addr: str | None = None, *, timeout: float = 10.0) -> ConsulClientFactory:
        """Build from `addr` (falls back to CONSUL_HTTP_ADDR, then 127.0.0.1:8500) and the env."""
        raw = addr or os.environ.get("CONSUL_HTTP_ADDR") or DEFAULT_CONSUL_ADDR
        scheme, host, port = parse_consul_addr(raw)
        cacert = os.environ.get("CONSUL_CACERT") or None
        if os.environ.get("CONSUL_HTTP_SSL", "").lower() == "true":
            scheme = "https"
        return cls(
            scheme=scheme,
            host=host,
            port=port,
            token=secret_from_env(os.environ, "CONSUL_HTTP_TOKEN"),
            cacert=cacert,
            client_cert=os.environ.get("CONSUL_CLIENT_CERT") or None,
            client_key=os.environ.get("CONSUL_CLIENT_KEY") or None,
            timeout=timeout,
        )

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def client(self) -> consul.Consul:
        """A new synchronous py-consul client for this agent.

        py-consul honours the explicit address, scheme and TLS files given here over
        CONSUL_HTTP_ADDR; only for the token does it let CONSUL_HTTP_TOKEN win, so the
        token goes with each request instead (`ConsulClientFactory.token` is the one used).
        """
        verify: bool | str = self.cacert or True
        cert: tuple[str, str] | None = None
        if self.client_cert and self.client_key:
            cert = (self.client_cert, self.client_key)
        return _TokenClient(
            host=self.host, port=self.port, scheme=self.scheme, verify=verify, cert=cert,
            connections_timeout=self.timeout, token=self.token,
        )  # fmt: skip


class _TokenClient(consul.Consul):
    """py-consul's client with the factory's token on every request, whatever
    CONSUL_HTTP_TOKEN says (the base class prefers the environment's)."""

    def __init__(self, *, token: str | None, **kwargs: Any) -> None:
        super().__init__(token=token, **kwargs)
        self._factory_token = token

    def prepare_headers(self, token: str | None = None) -> dict[str, str]:
        return super().prepare_headers(token or self._factory_token or "")


def parse_consul_addr(raw: str) -> tuple[str, str, int]:
    """Parse ``host:port`` or ``scheme://host:port`` into (scheme, host, port)."""
    text = raw.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConsulAddressError(
            f"Consul address {raw!r} is not host:port or http(s)://host:port; "
            "set CONSUL_HTTP_ADDR to e.g. 127.0.0.1:8500"
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 8500)
    except ValueError as exc:
        raise ConsulAddressError(
            f"Consul address {raw!r} has an invalid port; set CONSUL_HTTP_ADDR to e.g. "
            "127.0.0.1:8500"
        ) from exc
    return parts.scheme, parts.hostname, port


def until_answered(query: Callable[[], T], stop: threading.Event, what: str) -> T | None:
    """Run one Consul query (typically a blocking one) until Consul answers it.

    Every failure is logged and retried after 0.5, 1, 2, 4, then every 5 s; the pauses wait
    on `stop`, so setting it ends the wait at once. Returns None when `stop` is set first.
    """

    def _pause(seconds: float) -> None:
        stop.wait(seconds)

    retrying = tenacity.Retrying(
        wait=tenacity.wait_exponential(multiplier=0.5, max=5.0),
        stop=tenacity.stop_when_event_set(stop),
        sleep=_pause,
        retry=tenacity.retry_if_exception_type(Exception),
        before_sleep=lambda state: log.debug(
            "%s: %s; retrying in %.1f s",
            what,
            state.outcome.exception() if state.outcome else "no answer",
            state.upcoming_sleep,
        ),
        retry_error_callback=lambda _state: None,
    )
    if stop.is_set():
        return None
    return retrying(query)
