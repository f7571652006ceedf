"""API keys and KV entries of a stack this machine runs, written through its Consul API.

`morgan up` writes what Pulumi's ConsulKv resources write on a fleet: the deployment's
KV entries and the salted record of core's service key. The key itself reaches core
only as a secret in its environment (the stack's secrets file); no secret value is
ever written to KV.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from morgan.lab.endpoints import Endpoints
from morgan.lab.stack import StackError

if TYPE_CHECKING:
    from infra.deployment import ServiceKey


def key_store(ep: Endpoints) -> Any:
    from morgan.shared.auth import ApiKeyStore
    from morgan.shared.consul_client import ConsulClientFactory

    factory = ConsulClientFactory.from_env(ep.consul_addr)
    if ep.consul_token:
        factory = dataclasses.replace(factory, token=ep.consul_token)
    return ApiKeyStore(factory)


def create_api_key(store: Any, owner: str = "dev", scopes: Sequence[str] = ("user",)) -> str:
    """A new API key in the stack's Consul KV (the `morgan keys create` logic)."""
    _record, key = store.create(owner, scopes=scopes)
    return str(key)


def write_kv(store: Any, entries: dict[str, str]) -> int:
    """Write the deployment's KV entries (key → JSON text); returns how many were written."""
    client = store.consul.client()
    for key, value in sorted(entries.items()):
        client.kv.put(key, value)
    return len(entries)


def ensure_service_key_record(store: Any, key: str, spec: ServiceKey) -> bool:
    """Store the salted record of core's service key unless a matching one is there.

    Returns True when a record was written (a new stack, or a key rotated by deleting
    it from the stack's secrets file).
    """
    from morgan.shared.auth import AuthError, make_record, parse_key

    try:
        if "service" in store.verify(key).scopes:
            return False
    except AuthError:
        pass
    key_id, secret = parse_key(key)
    record = make_record(key_id, secret, spec.owner, datetime.now(UTC), scopes=("service",))
    client = store.consul.client()
    client.kv.put(f"{spec.record_prefix}/{key_id}", record.model_dump_json())
    # The record is all KV holds: check it round-trips before core starts on it.
    _index, item = client.kv.get(f"{spec.record_prefix}/{key_id}")
    if not item or json.loads(item["Value"])["key_id"] != key_id:
        raise StackError(
            f"Consul did not keep the service key record {key_id};"
            " see `morgan logs` of the Consul server"
        )
    return True
