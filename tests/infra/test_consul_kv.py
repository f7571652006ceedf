"""ConsulKv's dynamic provider against a real Consul: create, update, read, delete."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest

from infra.components.consul_kv import ConsulKvProvider
from infra.config import SERVICE_NAMES
from infra.kv import kv_entries, settings_model
from infra.placement import Plan


def _kv(consul: Any, key: str) -> str | None:
    response = httpx.get(f"{consul.url}/v1/kv/{key}", timeout=5)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return base64.b64decode(response.json()[0]["Value"]).decode()


def _props(consul: Any, entries: dict[str, str]) -> dict[str, Any]:
    return {
        "address": consul.addr,
        "scheme": "http",
        "token": "",
        "ca_pem": "",
        "entries": entries,
        "prefix": "test",
    }


@pytest.fixture()
def entries(homelab_plan: Plan) -> dict[str, str]:
    # A private prefix: other tests of the session read morgan/config/ on the same Consul.
    prefix = f"infra-test-{uuid.uuid4().hex[:8]}/"
    return {prefix + k: v for k, v in kv_entries(homelab_plan).items()}


@pytest.mark.integration
def test_create_update_read_delete(consul_server: Any, entries: dict[str, str]) -> None:
    provider = ConsulKvProvider()
    created = provider.create(_props(consul_server, entries))
    assert created.id
    some_key = next(k for k in entries if k.endswith("core/llm_service"))
    assert _kv(consul_server, some_key) == '"morgan-llm"'
    assert all(_kv(consul_server, k) == v for k, v in list(entries.items())[:20])

    changed = dict(entries)
    dropped = next(k for k in entries if k.endswith("core/system_prompt"))
    del changed[dropped]
    changed[some_key] = '"morgan-llm-canary"'
    diff = provider.diff(created.id, _props(consul_server, entries), _props(consul_server, changed))
    assert diff.changes
    provider.update(created.id, _props(consul_server, entries), _props(consul_server, changed))
    assert _kv(consul_server, some_key) == '"morgan-llm-canary"'
    assert _kv(consul_server, dropped) is None

    read = provider.read(created.id, _props(consul_server, changed))
    assert read.outs["entries"] == changed

    provider.delete(created.id, _props(consul_server, changed))
    assert all(_kv(consul_server, k) is None for k in changed)


@pytest.mark.integration
def test_no_change_means_no_diff(consul_server: Any, entries: dict[str, str]) -> None:
    diff = ConsulKvProvider().diff(
        "x", _props(consul_server, entries), _props(consul_server, entries)
    )
    assert not diff.changes


@pytest.mark.integration
def test_unreachable_consul_fails_loudly(entries: dict[str, str]) -> None:
    props = {
        "address": "127.0.0.1:1",
        "scheme": "http",
        "token": "",
        "ca_pem": "",
        "entries": entries,
        "prefix": "test",
    }
    with pytest.raises(RuntimeError, match="Consul refused the KV transaction"):
        ConsulKvProvider().create(props)


@pytest.mark.unit
def test_every_entry_is_accepted_by_its_services_settings_model(homelab_plan: Plan) -> None:
    entries = kv_entries(homelab_plan)
    for service in SERVICE_NAMES:
        model = settings_model(service)
        values = {
            k.rsplit("/", 1)[1]: json.loads(v)
            for k, v in entries.items()
            if k.startswith(f"morgan/config/{service}/")
        }
        if model is None:
            assert values == dict(homelab_plan.config.services.get(service).settings)
            continue
        parsed = model.model_validate(values)
        for key, value in homelab_plan.config.services.get(service).settings.items():
            assert getattr(parsed, key) == value
