"""One way to build a Consul client, honouring Consul's standard environment variables.

`CONSUL_HTTP_ADDR` (``host:port`` or ``scheme://host:port``), `CONSUL_HTTP_TOKEN` (ACLs),
`CONSUL_CACERT`, `CONSUL_CLIENT_CERT` and `CONSUL_CLIENT_KEY` (TLS to the agent).
python-consul2 is synchronous: call it from async code through `asyncio.to_thread`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from urllib.parse import urlsplit

import consul
import requests

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
    """Connection settings for the Consul agent; `client()` builds a python-consul2 client."""

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
            token=os.environ.get("CONSUL_HTTP_TOKEN") or None,
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

    def with_timeout(self, timeout: float) -> ConsulClientFactory:
        """Same agent, another read timeout (blocking queries need more than their wait)."""
        return ConsulClientFactory(
            self.scheme, self.host, self.port, self.token, self.cacert,
            self.client_cert, self.client_key, timeout,
        )

    def client(self) -> consul.Consul:
        """A new synchronous python-consul2 client for this agent."""
        verify: bool | str = self.cacert or True
        cert: tuple[str, str] | None = None
        if self.client_cert and self.client_key:
            cert = (self.client_cert, self.client_key)
        with warnings.catch_warnings():
            # python-consul2 warns about legacy ACL/discovery-chain APIs on every construction.
            warnings.simplefilter("ignore", DeprecationWarning)
            c = consul.Consul(host=self.host, port=self.port, scheme=self.scheme, verify=verify,
                              cert=cert, timeout=self.timeout)
        # python-consul2 re-reads CONSUL_HTTP_ADDR/TOKEN itself; the factory's values win so
        # an explicit address (tests, `--consul`) is honoured.
        c.http = c.http_connect(self.host, self.port, self.scheme, verify, cert, self.timeout)
        c.scheme = self.scheme
        c.token = self.token
        return c


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
