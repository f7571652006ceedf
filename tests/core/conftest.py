"""Fixtures for core's tests: a fresh PostgreSQL database per test, Redis, Qdrant dirs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from morgan.core.memory.embedder import SentenceEmbedder
from morgan.shared.auth import ApiKeyStore
from morgan.shared.consul_client import ConsulClientFactory

from tests.core.servers import ModelInstance, echo_instance
from tests.harness.servers import ConsulServer, PostgresServer

ECHO_LLM = "test-echo-llm"
ECHO_LLM_SLOW = "test-echo-llm-slow"
ECHO_STT = "test-echo-stt"
ECHO_TTS = "test-echo-tts"
ECHO_TTS_BROKEN = "test-echo-tts-broken"


def make_database(pg: PostgresServer) -> str:
    """A new empty database owned by the test role; returns its DSN."""
    name = f"core_{uuid.uuid4().hex[:12]}"
    pg.psql(f'CREATE DATABASE "{name}" OWNER "{pg.user}"')
    base, _, _ = pg.dsn.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> str:
    return make_database(postgres_server)


@pytest.fixture(scope="session")
def embedder() -> Iterator[SentenceEmbedder]:
    model = SentenceEmbedder()
    yield model
    model.close()


@pytest.fixture
def qdrant_path(tmp_path: Path) -> Path:
    return tmp_path / "qdrant"


# --------------------------------------------------------------------- core over HTTP


@dataclass(frozen=True)
class ApiKeys:
    good: str
    revoked: str
    headers: dict[str, str]


@pytest.fixture(scope="session")
def api_keys(consul_server: ConsulServer) -> ApiKeys:
    store = ApiKeyStore(ConsulClientFactory.from_env(consul_server.addr), cache_seconds=0)
    _, good = store.create("core-tests")
    revoked_record, revoked = store.create("core-tests-revoked")
    store.revoke(revoked_record.key_id)
    return ApiKeys(good=good, revoked=revoked, headers={"X-API-Key": good})


@pytest.fixture(scope="session")
def echo_models(
    consul_server: ConsulServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ModelInstance]]:
    """Deterministic model services under test names (so real ones can share the Consul)."""
    logs = tmp_path_factory.mktemp("echo-models")
    instances = {
        "llm": echo_instance(ECHO_LLM, consul_server.addr, logs),
        "stt": echo_instance(ECHO_STT, consul_server.addr, logs),
        "tts": echo_instance(ECHO_TTS, consul_server.addr, logs),
        "tts_broken": echo_instance(ECHO_TTS_BROKEN, consul_server.addr, logs, fail_tts=True),
        "llm_slow": echo_instance(ECHO_LLM_SLOW, consul_server.addr, logs, delay_s=2.0),
    }
    for inst in instances.values():
        inst.process.start()
    try:
        for inst in instances.values():
            inst.start()
        yield instances
    finally:
        for inst in instances.values():
            inst.stop()


def echo_settings_overrides() -> dict[str, Any]:
    return {"llm_service": ECHO_LLM, "stt_service": ECHO_STT, "tts_service": ECHO_TTS}
