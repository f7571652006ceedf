"""Consul KV entries from the services' typed settings models plus the stack's overrides.

Keys: `morgan/config/<service>/<field>`, values JSON (the format
`morgan.shared.config_loader` reads). Fields that differ per replica (port,
device, TLS paths, ...) come from each container's environment instead, and
secret fields never go to KV.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from infra.config import SERVICE_NAMES
from infra.placement import Plan

KV_ROOT = "morgan/config"
# Set per container through the environment (see infra/specs.py), never in shared KV.
PER_REPLICA_FIELDS = frozenset(
    {
        "service_name",
        "host",
        "bind_host",
        "port",
        "consul_http_addr",
        "version",
        "tags",
        "engine",
        "device",
        "vram_mb",
        "tls_ca",
        "tls_cert",
        "tls_key",
        "redis_cluster_nodes",
        "qdrant_url",
        "qdrant_path",
    }
)


class KvConfigError(ValueError):
    """Stack overrides the service's settings model rejects."""


def settings_model(service: str) -> type[BaseModel] | None:
    """The service's settings class (subclass of ServiceSettings) or None if not written yet."""
    try:
        module = importlib.import_module(f"morgan.{service}.config")
        from morgan.shared.settings import ServiceSettings
    except ModuleNotFoundError as error:
        # Only "that module does not exist yet" is tolerated; a broken module still fails.
        if error.name and error.name.startswith("morgan."):
            return None
        raise
    candidates = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, ServiceSettings)
        and obj is not ServiceSettings
        and obj.__module__ == module.__name__
    ]
    return candidates[0] if candidates else None


def _secret_fields(model: type[BaseModel]) -> set[str]:
    return {
        name
        for name, field in model.model_fields.items()
        if field.annotation is SecretStr or "SecretStr" in str(field.annotation)
    }


def service_entries(plan: Plan, service: str) -> dict[str, str]:
    overrides: dict[str, Any] = dict(plan.config.services.get(service).settings)
    if service == "core":
        # One budget per client, held by the gateway and by every core (WebSocket turns).
        gateway = plan.config.gateway
        overrides.setdefault("rate_limit_per_minute", gateway.api_rate_per_minute)
        overrides.setdefault("audio_rate_limit_per_minute", gateway.audio_rate_per_minute)
    model = settings_model(service)
    if model is None:
        values = overrides
    else:
        secret = _secret_fields(model)
        bad = sorted(set(overrides) & (secret | PER_REPLICA_FIELDS))
        if bad:
            raise KvConfigError(
                f"morgan:fleet.services.{service}.settings: {bad} cannot be set in shared KV"
                " (secret or per-replica); remove them, the deploy sets them per container"
            )
        from morgan.shared.settings import is_env_only

        env_only = {name for name in model.model_fields if is_env_only(model, name)}
        if bad := sorted(set(overrides) & env_only):
            raise KvConfigError(
                f"morgan:fleet.services.{service}.settings: {bad} are security settings only "
                "a container's environment may set, and the deploy keeps them on (API keys, "
                "TLS as morgan:security says); remove them"
            )
        try:
            validated = model.model_validate(overrides)
        except ValidationError as error:
            problems = "; ".join(
                f"morgan:fleet.services.{service}.settings."
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in error.errors()
            )
            raise KvConfigError(problems + " (see docs/configuration.md)") from None
        dumped = validated.model_dump(mode="json")
        values = {
            k: v
            for k, v in dumped.items()
            if k not in PER_REPLICA_FIELDS and k not in secret and k not in env_only
        }
    return {
        f"{KV_ROOT}/{service}/{k}": json.dumps(v, sort_keys=True) for k, v in sorted(values.items())
    }


def kv_entries(plan: Plan) -> dict[str, str]:
    """Every KV entry the stack writes, key → JSON text."""
    entries: dict[str, str] = {}
    for service in SERVICE_NAMES:
        entries.update(service_entries(plan, service))
    return entries
