"""Upload per-service YAML files to Consul KV (`morgan config migrate`).

DIR/global.yaml → morgan/config/global/<field>, DIR/<service>.yaml →
morgan/config/<service>/<field>; each top-level field becomes one key holding JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from morgan.shared.config_loader import GLOBAL_SCOPE, KV_ROOT, ConfigError, kv_prefix
from morgan.shared.consul_client import ConsulClientFactory


@dataclass
class KVChange:
    key: str
    old: Any = None
    new: Any = None
    kind: str = "add"  # add | change | delete

    def describe(self) -> str:
        if self.kind == "add":
            return f"+ {self.key} = {json.dumps(self.new)}"
        if self.kind == "delete":
            return f"- {self.key} (was {json.dumps(self.old)})"
        return f"~ {self.key}: {json.dumps(self.old)} -> {json.dumps(self.new)}"


@dataclass
class MigrationPlan:
    changes: list[KVChange] = field(default_factory=list)
    unchanged: int = 0
    scopes: list[str] = field(default_factory=list)


def read_yaml_dir(directory: Path) -> dict[str, dict[str, Any]]:
    """scope -> mapping, from DIR/*.yaml (and *.yml)."""
    if not directory.is_dir():
        raise ConfigError(
            f"{directory} is not a directory; pass the folder holding "
            "global.yaml and <service>.yaml"
        )
    out: dict[str, dict[str, Any]] = {}
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise ConfigError(f"{directory} holds no .yaml files (expected global.yaml, llm.yaml, ...)")
    for path in files:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc}); fix the file") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of setting names to values")
        out[path.stem] = data
    return out


def validate_scopes(scopes: dict[str, dict[str, Any]]) -> None:
    """Check each service's file against its settings model, when the model is known."""
    from morgan.shared.config_docs import load_known_settings

    classes = load_known_settings()
    errors = []
    for scope, data in scopes.items():
        cls = classes.get(scope)
        if scope == GLOBAL_SCOPE:
            cls = classes.get("shared")
            shared_fields = set(cls.model_fields) if cls else set()
            service_fields = {f for c in classes.values() for f in c.model_fields}
            unknown = sorted(set(data) - service_fields - shared_fields)
            if unknown:
                errors.append(f"global.yaml: unknown settings {unknown}; no service has them")
            continue
        if cls is None:
            continue
        try:
            cls.model_validate({**data})
        except ValidationError as exc:
            errors.append(f"{scope}.yaml: {exc}")
    if errors:
        raise ConfigError("refusing to upload invalid configuration:\n" + "\n".join(errors))


def plan_migration(
    consul: ConsulClientFactory, directory: Path, *, prune: bool = False
) -> MigrationPlan:
    scopes = read_yaml_dir(directory)
    validate_scopes(scopes)
    client = consul.client()
    _, entries = client.kv.get(KV_ROOT, recurse=True)
    current: dict[str, Any] = {}
    for e in entries or []:
        raw = e.get("Value")
        text = raw.decode() if isinstance(raw, bytes | bytearray) else (raw or "")
        try:
            current[e["Key"]] = json.loads(text)
        except ValueError:
            current[e["Key"]] = text
    plan = MigrationPlan(scopes=sorted(scopes))
    wanted: dict[str, Any] = {}
    for scope, data in scopes.items():
        for name, value in data.items():
            wanted[kv_prefix(scope) + str(name)] = value
    for key, value in sorted(wanted.items()):
        if key not in current:
            plan.changes.append(KVChange(key, None, value, "add"))
        elif current[key] != value:
            plan.changes.append(KVChange(key, current[key], value, "change"))
        else:
            plan.unchanged += 1
    if prune:
        prefixes = tuple(kv_prefix(s) for s in scopes)
        for key in sorted(current):
            if key.startswith(prefixes) and key not in wanted:
                plan.changes.append(KVChange(key, current[key], None, "delete"))
    return plan


def apply_migration(consul: ConsulClientFactory, plan: MigrationPlan) -> None:
    client = consul.client()
    for change in plan.changes:
        if change.kind == "delete":
            client.kv.delete(change.key)
        else:
            client.kv.put(change.key, json.dumps(change.new))
