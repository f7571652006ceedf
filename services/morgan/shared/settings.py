"""Typed settings every Morgan service shares; each service subclasses `ServiceSettings`.

Values come from (highest first) the environment, Consul KV, a local YAML file, then these
defaults — see `morgan.shared.config_loader.ConsulConfigLoader`.

A running service follows Consul KV: it reads the current settings on each request, or
rebuilds what depends on a setting when the loader reports a change. A field declared with
`restart_field` (its JSON Schema carries `"restart": true`) is read only at start-up (ports,
addresses, TLS files, engines, models, connection pools); a change to it takes effect when
the service starts again. `needs_restart(cls, name)` tells which is which.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticUndefined

from morgan import __version__

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Device = Literal["cpu", "cuda", "mps"]


RESTART_NOTE = "Read at start-up: a change needs a restart."


def restart_field(default: Any = PydanticUndefined, *, description: str, **kwargs: Any) -> Any:
    """`Field` of a setting a running service cannot change: marked `"restart": true` in the
    JSON Schema, with `RESTART_NOTE` after the description."""
    return Field(
        default, description=f"{description} {RESTART_NOTE}",
        json_schema_extra={"restart": True}, **kwargs,
    )  # fmt: skip


ENV_ONLY_NOTE = (
    "Environment only: a security setting that Consul KV cannot change (a KV key is ignored)."
)


def env_only_field(default: Any = PydanticUndefined, *, description: str, **kwargs: Any) -> Any:
    """`Field` of a security setting only the service's environment may set: whoever can
    write Consul KV must not be able to switch off API keys or TLS. Read at start-up."""
    return Field(
        default, description=f"{description} {ENV_ONLY_NOTE} {RESTART_NOTE}",
        json_schema_extra={"restart": True, "env_only": True}, **kwargs,
    )  # fmt: skip


def is_env_only(cls: type[BaseModel], name: str) -> bool:
    """True when field `name` of `cls` was declared with `env_only_field`."""
    field = cls.model_fields.get(name)
    extra = field.json_schema_extra if field is not None else None
    return isinstance(extra, dict) and extra.get("env_only") is True


def needs_restart(cls: type[BaseModel], name: str) -> bool:
    """True when field `name` of `cls` is read only at start-up (declared with
    `restart_field`); False for live settings and for names `cls` does not have."""
    field = cls.model_fields.get(name)
    extra = field.json_schema_extra if field is not None else None
    return isinstance(extra, dict) and extra.get("restart") is True


def restart_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name in cls.model_fields if needs_restart(cls, name))


def default_advertise_host() -> str:
    """MORGAN_ADVERTISE_HOST, else this machine's hostname."""
    return os.environ.get("MORGAN_ADVERTISE_HOST") or socket.gethostname()


def default_consul_addr() -> str:
    return os.environ.get("CONSUL_HTTP_ADDR") or "127.0.0.1:8500"


class ServiceSettings(BaseModel):
    """Settings shared by every Morgan service (core, llm, stt, tts)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    service_name: str = restart_field(
        "morgan-service",
        description="Name the service registers under in Consul, e.g. `morgan-llm`.",
        min_length=1,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
    )
    host: str = restart_field(
        default_factory=default_advertise_host,
        description="Address other services reach this one at (advertised in Consul). "
        "Defaults to MORGAN_ADVERTISE_HOST, else the hostname.",
        min_length=1,
    )
    bind_host: str = restart_field("0.0.0.0", description="Interface the HTTP server listens on.")
    port: int = restart_field(
        8000, ge=1, le=65535, description="TCP port the HTTP server listens on."
    )
    consul_http_addr: str = restart_field(
        default_factory=default_consul_addr,
        description="Consul agent address (`host:port` or `https://host:port`); "
        "defaults to CONSUL_HTTP_ADDR.",
    )
    register_in_consul: bool = restart_field(
        True, description="Register this instance in Consul at start-up (and deregister on exit)."
    )
    consul_check_interval: str = restart_field(
        "10s",
        pattern=r"^[0-9]+(ms|s|m)$",
        description="How often Consul calls /health (timeout 5 s; deregistered after 1 min "
        "critical).",
    )
    consul_anti_entropy_seconds: float = restart_field(
        5.0,
        gt=0,
        description="How often the instance checks it is still registered in Consul "
        "(re-registers after a Consul restart).",
    )
    version: str = restart_field(__version__, description="Version advertised in Consul meta.")
    log_level: LogLevel = Field("INFO", description="Lowest log level written.")
    tags: list[str] = restart_field(default_factory=list, description="Extra Consul tags.")
    engine: str = restart_field("", description="Inference engine advertised in Consul meta.")
    device: Device = restart_field("cpu", description="Compute device advertised in Consul meta.")
    vram_mb: int = restart_field(0, ge=0, description="GPU memory advertised in Consul meta (MiB).")
    tls_ca: Path | None = env_only_field(
        None,
        description="CA bundle that signs peers' certificates; with tls_cert and tls_key "
        "the server speaks HTTPS and requires client certificates (mTLS).",
    )
    tls_cert: Path | None = env_only_field(None, description="This service's certificate (PEM).")
    tls_key: Path | None = env_only_field(None, description="This service's private key (PEM).")
    auth_enabled: bool = env_only_field(
        True, description="Require an API key on protected prefixes."
    )
    api_key_cache_seconds: float = env_only_field(
        30.0,
        ge=0,
        le=300,
        description="How long a verified API key is trusted without asking Consul "
        "again (at most 300 s); a revocation takes effect within this window.",
    )
    auth_failures_per_minute: int = env_only_field(
        20,
        ge=1,
        le=10_000,
        description="Failed API-key checks a client may make per minute; past them it is "
        "answered 429 before any key is looked up.",
    )
    shutdown_delay_seconds: float = restart_field(
        7.0,
        ge=0,
        le=60,
        description="On SIGTERM, how long the service goes on accepting requests while its "
        "/health answers 503 and it is out of Consul, so that the gateway (health check every "
        "5 s) stops sending it new ones before it drains.",
    )
    shutdown_drain_seconds: float = restart_field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    http_timeout_seconds: float = restart_field(
        30.0, gt=0, description="Per-attempt timeout of calls to other services."
    )
    http_deadline_seconds: float = restart_field(
        60.0, gt=0, description="Overall deadline of one call to another service, retries included."
    )
    discovery_cache_seconds: float = restart_field(
        30.0, ge=0, description="How long discovered instances are reused without asking Consul."
    )
    discovery_stale_max_seconds: float = restart_field(
        300.0,
        ge=0,
        description="While Consul is unreachable, last known instances are used for this long.",
    )

    @model_validator(mode="after")
    def _tls_complete(self) -> ServiceSettings:
        named = [self.tls_ca, self.tls_cert, self.tls_key]
        if any(named) and not all(named):
            raise ValueError(
                "tls_ca, tls_cert and tls_key go together: set all three for HTTPS with "
                "client certificates, or none for plain HTTP"
            )
        return self

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_ca and self.tls_cert and self.tls_key)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_enabled else "http"


S = TypeVar("S", bound=ServiceSettings)


def settings_source(settings: S | Callable[[], S]) -> Callable[[], S]:
    """A callable returning the settings to use now: `settings` itself when it is one (a
    fixed object), else a fixed settings object wrapped in one."""
    if isinstance(settings, ServiceSettings):
        fixed = settings
        return lambda: fixed
    return settings
