"""Core's service key: a secret env on every core replica, and a KV record that verifies it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from morgan.shared.auth import (
    ApiKeyRecord,
    ApiKeyStore,
    AuthError,
    compose_key,
    parse_key,
    secret_matches,
)
from morgan.shared.consul_client import ConsulClientFactory

from infra.components.consul_kv import ConsulKvProvider
from infra.components.service_key import KEYS_PREFIX, CreatedAtProvider, record_entries
from infra.deployment import build_deployment
from infra.placement import Plan
from infra.render.compose import render_compose
from infra.render.files import write_renderings
from infra.render.swarm import render_swarm
from tests.infra.mocks import SECRET_MARK, is_secret, plain_strings, unwrap
from tests.infra.program import Built

CONTAINER = "docker:index/container:Container"
ENV_NAME = "MORGAN_CORE_SERVICE_API_KEY"
FILE = f"/run/secrets/{ENV_NAME}"


@pytest.fixture(params=["homelab", "dev"])
def stack(request: pytest.FixtureRequest, built: dict[str, Built]) -> Built:
    return built[request.param]


def _core_keys(stack: Built) -> list[str]:
    keys = []
    for r in stack.mocks.of_type(CONTAINER):
        if not r.name.startswith("morgan-core-"):
            continue
        # A file of core's user's, named by core's environment, which holds no key.
        env = dict(e.split("=", 1) for e in unwrap(r.inputs["envs"]))
        assert ENV_NAME not in env, r.name
        assert env[f"{ENV_NAME}_FILE"] == FILE, r.name
        assert is_secret(r.inputs["uploads"]), r.name
        (upload,) = [u for u in unwrap(r.inputs["uploads"]) if u["file"] == FILE]
        assert (upload["permissions"], upload["owner"]) == ("0400", "10001"), r.name
        keys.append(upload["content"])
    return keys


def _record_resource(stack: Built) -> Any:
    (kv,) = [
        r
        for r in stack.mocks.of_type("pulumi-python:dynamic:Resource")
        if r.name == "service-key-entries"
    ]
    return kv


@pytest.mark.unit
def test_the_variable_is_the_one_core_reads_its_service_key_from() -> None:
    from morgan.core.config import CoreSettings
    from morgan.shared.config_loader import env_prefix

    assert "service_api_key" in CoreSettings.model_fields
    assert env_prefix("core") + "SERVICE_API_KEY" == ENV_NAME


@pytest.mark.unit
def test_every_core_replica_gets_the_same_key_as_a_secret(stack: Built) -> None:
    keys = _core_keys(stack)
    assert len(keys) == len([r for r in stack.plan.replicas if r.role == "core"]) >= 1
    assert len(set(keys)) == 1
    key_id, secret = parse_key(keys[0])
    assert len(key_id) == 12 and SECRET_MARK in secret


@pytest.mark.unit
def test_kv_record_verifies_the_key_and_holds_only_its_hash(stack: Built) -> None:
    (key,) = set(_core_keys(stack))
    key_id, secret = parse_key(key)
    kv = _record_resource(stack)
    assert is_secret(kv.inputs["entries"]) and is_secret(kv.inputs["token"])
    assert kv.inputs["prefix"] == KEYS_PREFIX
    entries = unwrap(kv.inputs["entries"])
    assert list(entries) == [f"{KEYS_PREFIX}/{key_id}"]
    text = entries[f"{KEYS_PREFIX}/{key_id}"]
    assert secret not in text and key not in text
    record = ApiKeyRecord.model_validate(json.loads(text))
    assert record.key_id == key_id and not record.revoked and record.expires is None
    assert record.owner.startswith("morgan-core")
    assert secret_matches(record, secret)
    assert not secret_matches(record, secret[:-1] + ("x" if secret[-1] != "x" else "y"))


@pytest.mark.unit
def test_key_is_nowhere_in_plain_text(stack: Built) -> None:
    (key,) = set(_core_keys(stack))
    _, secret = parse_key(key)
    for r in stack.mocks.resources:
        if r.typ.startswith("random:"):
            continue
        for text in plain_strings(r.inputs):
            assert secret not in text, f"{r.typ} {r.name} holds the service key in plain text"
    for name, (value, is_secret_output) in stack.outputs.items():
        assert is_secret_output or secret not in json.dumps(value), name
    key_id_output, key_id_secret = stack.outputs["core_service_key_id"]
    assert not key_id_secret and key_id_output == parse_key(key)[0]
    kv_keys, kv_keys_secret = stack.outputs["kv_keys"]
    assert not kv_keys_secret and not any(k.startswith(KEYS_PREFIX) for k in kv_keys)


@pytest.mark.unit
def test_renderers_carry_the_key_as_a_variable(homelab_plan: Plan, tmp_path: Any) -> None:
    core_host = next(r.host for r in homelab_plan.replicas if r.role == "core")
    assert ENV_NAME in build_deployment(homelab_plan).secret_variables(core_host)
    assert ENV_NAME in build_deployment(homelab_plan).secret_variables()
    compose = render_compose(build_deployment(homelab_plan), core_host)
    core = next(s for n, s in compose["services"].items() if n.startswith("morgan-core-"))
    assert ENV_NAME not in core["environment"]
    assert core["environment"][f"{ENV_NAME}_FILE"] == FILE
    # A compose secret whose content is the variable (from --env-file).
    assert {"source": "core_service_api_key", "target": ENV_NAME, "mode": 0o444} in core["secrets"]
    assert compose["secrets"]["core_service_api_key"] == {"environment": ENV_NAME}
    swarm = render_swarm(build_deployment(homelab_plan))
    swarm_core = next(s for n, s in swarm["services"].items() if n.startswith("morgan-core-"))
    assert ENV_NAME not in swarm_core["environment"]
    assert swarm_core["environment"][f"{ENV_NAME}_FILE"] == FILE
    ref = {"source": "secret-core_service_api_key", "target": FILE, "mode": 0o400,
           "uid": "10001", "gid": "10001"}  # fmt: skip
    assert ref in swarm_core["secrets"]
    assert swarm["secrets"]["secret-core_service_api_key"] == {
        "file": "./secrets/core_service_api_key",
        "name": "secret-core_service_api_key",
    }
    write_renderings(build_deployment(homelab_plan), tmp_path)
    lines = (tmp_path / "secrets.env.example").read_text().splitlines()
    at = lines.index(f"{ENV_NAME}=")
    assert "morgan keys create" in lines[at - 2] and lines[at - 2].startswith("#")
    assert lines[at - 1] == "# docker-stack.yml also reads it from ./secrets/core_service_api_key"


@pytest.mark.unit
def test_record_entries_are_stable_for_the_same_inputs() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat()
    args = ("0123456789ab", "A" * 40, "00" * 16, created, "morgan-core (service key)")
    first, second = record_entries(*args), record_entries(*args)
    assert first == second
    record = ApiKeyRecord.model_validate_json(first[f"{KEYS_PREFIX}/0123456789ab"])
    assert record.created.isoformat() == created
    assert secret_matches(record, "A" * 40)
    other = record_entries(args[0], args[1], "11" * 16, created, args[4])
    assert other != first


@pytest.mark.unit
def test_created_at_keeps_the_first_time_until_the_trigger_changes() -> None:
    provider = CreatedAtProvider()
    olds = {"trigger": "0123456789ab", "created": "2026-01-01T00:00:00+00:00"}
    made = provider.create(olds)
    assert made.outs == olds
    later = {**olds, "created": "2026-06-01T00:00:00+00:00"}
    assert not provider.diff(made.id, olds, later).changes
    rotated = provider.diff(made.id, olds, {**later, "trigger": "ba9876543210"})
    assert rotated.changes and rotated.replaces == ["trigger"]


@pytest.mark.integration
def test_written_record_lets_the_key_store_verify_the_key(consul_server: Any) -> None:
    """What `pulumi up` writes is what the model services' ApiKeyStore accepts."""
    key_id = uuid.uuid4().hex[:12]
    secret = uuid.uuid4().hex + "Ab"
    entries = record_entries(
        key_id, secret, "ab" * 16, datetime.now(UTC).isoformat(), "morgan-core (service key)"
    )
    props = {
        "address": consul_server.addr,
        "scheme": "http",
        "token": "",
        "ca_pem": "",
        "entries": entries,
        "prefix": KEYS_PREFIX,
    }
    provider = ConsulKvProvider()
    made = provider.create(props)
    store = ApiKeyStore(ConsulClientFactory.from_env(consul_server.addr), cache_seconds=0)
    try:
        assert store.verify(f"mk_{key_id}_{secret}").key_id == key_id
        with pytest.raises(AuthError) as wrong:
            store.verify(f"mk_{key_id}_{secret[:-1]}x")
        assert wrong.value.reason == "wrong"
    finally:
        provider.delete(made.id, props)
    with pytest.raises(AuthError) as gone:
        store.verify(f"mk_{key_id}_{secret}")
    assert gone.value.reason == "unknown"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("key_id", "secret"),
    [("core-service", "A" * 40), ("0123456789ab", "short"), ("0123456789ab", "A" * 39 + "!")],
)
def test_compose_key_refuses_what_parse_key_would_not_accept(key_id: str, secret: str) -> None:
    with pytest.raises(ValueError, match="12-hex-digit id"):
        compose_key(key_id, secret)
    assert compose_key("0123456789ab", "A" * 40) == "mk_0123456789ab_" + "A" * 40
