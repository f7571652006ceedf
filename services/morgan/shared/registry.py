"""Registering a service instance in Consul, and keeping it registered.

The instance id is `<name>-<host>-<port>`. An HTTP check on /health (every 10 s, 5 s
timeout) lets Consul drop a dead instance after one minute critical. An anti-entropy loop
re-registers the instance when the agent no longer lists it (e.g. Consul restarted without
state), so a Consul restart never needs a service restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.metrics import CONSUL_REGISTRATIONS_TOTAL
from morgan.shared.settings import ServiceSettings

log = logging.getLogger(__name__)


def service_id(name: str, host: str, port: int) -> str:
    return f"{name}-{host}-{port}"


def default_meta(
    version: str, engine: str = "", device: str = "cpu", vram_mb: int = 0
) -> dict[str, str]:
    return {
        "version": version,
        "engine": engine,
        "device": device,
        "vram_mb": str(vram_mb),
        # Inside a container these would describe the container's Linux, not the host (a
        # Mac or a Windows PC): the deployment passes the host's own values.
        "arch": os.environ.get("MORGAN_HOST_ARCH") or platform.machine().lower(),
        "os": os.environ.get("MORGAN_HOST_OS") or platform.system().lower(),
    }


class ConsulRegistry:
    """Registers one instance in the local Consul agent and keeps it there until `stop()`."""

    def __init__(
        self,
        consul: ConsulClientFactory,
        *,
        name: str,
        host: str,
        port: int,
        tags: Sequence[str] = (),
        meta: Mapping[str, str] | None = None,
        scheme: str = "http",
        check_path: str = "/health",
        check_interval: str = "10s",
        check_timeout: str = "5s",
        deregister_critical_after: str = "1m",
        anti_entropy_seconds: float = 5.0,
    ) -> None:
        self.consul = consul
        self.name = name
        self.host = host
        self.port = port
        self.tags = list(tags)
        self.meta = dict(meta or {})
        if scheme == "https":
            self.meta.setdefault("scheme", "https")
        self.scheme = scheme
        self.check_path = check_path
        self.check_interval = check_interval
        self.check_timeout = check_timeout
        self.deregister_critical_after = deregister_critical_after
        self.anti_entropy_seconds = anti_entropy_seconds
        self._client = consul.client()
        # One registration at a time, each sending the meta of the moment: two settings
        # changes in a row re-register from two threads, and without this the older meta
        # could reach Consul last.
        self._register_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._registered = False
        self._stopped = False

    @classmethod
    def from_settings(
        cls,
        settings: ServiceSettings,
        consul: ConsulClientFactory | None = None,
        *,
        extra_meta: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> ConsulRegistry:
        meta = default_meta(settings.version, settings.engine, settings.device, settings.vram_mb)
        meta.update(extra_meta or {})
        return cls(
            consul or ConsulClientFactory.from_env(settings.consul_http_addr),
            name=settings.service_name,
            host=settings.host,
            port=settings.port,
            tags=["morgan", *settings.tags],
            meta=meta,
            scheme=settings.scheme,
            **{
                "check_interval": settings.consul_check_interval,
                "anti_entropy_seconds": settings.consul_anti_entropy_seconds,
                **kwargs,
            },
        )

    @property
    def service_id(self) -> str:
        return service_id(self.name, self.host, self.port)

    def check_definition(self) -> dict[str, Any]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        check: dict[str, Any] = {
            "http": f"{self.scheme}://{host}:{self.port}{self.check_path}",
            "interval": self.check_interval,
            "timeout": self.check_timeout,
            "DeregisterCriticalServiceAfter": self.deregister_critical_after,
        }
        if self.scheme == "https":
            # The agent presents its own certificate when `enable_agent_tls_for_checks` is on;
            # the service's certificate is issued for its name, not for the check URL.
            check["TLSSkipVerify"] = True
        return check

    # -- synchronous core (worker thread) -----------------------------------------------------

    def register_sync(self) -> None:
        with self._register_lock:
            self._client.agent.service.register(
                self.name,
                service_id=self.service_id,
                address=self.host,
                port=self.port,
                tags=self.tags,
                meta=dict(self.meta),
                check=self.check_definition(),
            )
            self._registered = True
        CONSUL_REGISTRATIONS_TOTAL.labels(self.name).inc()
        log.info("registered %s in Consul at %s", self.service_id, self.consul.addr)

    def deregister_sync(self) -> None:
        with self._register_lock:
            self._client.agent.service.deregister(self.service_id)
            self._registered = False
        log.info("deregistered %s from Consul", self.service_id)

    def registered_meta_sync(self) -> dict[str, str] | None:
        """The meta the agent holds for this instance; None when it is not registered."""
        entry = (self._client.agent.services() or {}).get(self.service_id)
        return None if entry is None else dict(entry.get("Meta") or {})

    # -- async API ----------------------------------------------------------------------------

    async def register(self) -> None:
        await asyncio.to_thread(self.register_sync)

    async def deregister(self) -> None:
        await asyncio.to_thread(self.deregister_sync)

    async def start(self) -> None:
        """Register (retrying in the background if Consul is down) and keep registered."""
        try:
            await self.register()
        except Exception as exc:
            log.warning(
                "could not register %s in Consul at %s (%s); will retry every %.0f s",
                self.service_id,
                self.consul.addr,
                exc,
                self.anti_entropy_seconds,
            )
        self._task = asyncio.create_task(self._anti_entropy(), name="consul-anti-entropy")

    async def _anti_entropy(self) -> None:
        while True:
            await asyncio.sleep(self.anti_entropy_seconds)
            try:
                held = await asyncio.to_thread(self.registered_meta_sync)
                if held is None:
                    log.warning(
                        "%s missing from the Consul agent; registering again", self.service_id
                    )
                    await self.register()
                elif held != self.meta:
                    # A re-registration after a settings change failed (Consul was away).
                    log.warning(
                        "%s has outdated meta in Consul (%s, now %s); registering again",
                        self.service_id,
                        held,
                        self.meta,
                    )
                    await self.register()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("anti-entropy check failed: %s", exc)

    async def stop(self) -> None:
        """Stop the anti-entropy loop and deregister (errors are logged, not raised).
        Calling it again is a no-op."""
        if self._stopped:
            return
        self._stopped = True
        await self.stop_anti_entropy()
        try:
            await self.deregister()
        except Exception as exc:
            log.warning("could not deregister %s from Consul: %s", self.service_id, exc)

    async def stop_anti_entropy(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
