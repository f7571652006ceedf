"""Fixtures for core's tests: a fresh PostgreSQL database per test, Redis, Qdrant dirs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from morgan.core.memory.embedder import SentenceEmbedder
from morgan.shared.auth import ApiKeyStore
from morgan.shared.consul_client import ConsulClientFactory

from tests.core.servers import CoreServer, ModelInstance, core_settings, echo_instance
from tests.harness.servers import ConsulServer, PostgresServer, RedisCluster

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
    good: str  # an admin key: the tests act for many users of their own
    revoked: str
    service: str  # core's key for the model services
    alice: str  # user keys, each acting only for its owner
    bob: str
    headers: dict[str, str]


@pytest.fixture(scope="session")
def api_keys(consul_server: ConsulServer) -> ApiKeys:
    store = ApiKeyStore(ConsulClientFactory.from_env(consul_server.addr), cache_seconds=0)
    _, good = store.create("core-tests", scopes=("admin",))
    revoked_record, revoked = store.create("core-tests-revoked", scopes=("admin",))
    store.revoke(revoked_record.key_id)
    _, service = store.create("core-tests-service", scopes=("service",))
    _, alice = store.create("alice")
    _, bob = store.create("bob")
    return ApiKeys(good=good, revoked=revoked, service=service, alice=alice, bob=bob,
                   headers={"X-API-Key": good})  # fmt: skip


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


@pytest.fixture(scope="module")
def core_overrides() -> dict[str, Any]:
    """Settings a test module's `core` runs with (a module overrides this fixture)."""
    return {}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def core(
    consul_server: ConsulServer,
    postgres_server: PostgresServer,
    redis_cluster: RedisCluster,
    echo_models: dict[str, ModelInstance],
    tmp_path_factory: pytest.TempPathFactory,
    core_overrides: dict[str, Any],
) -> AsyncIterator[CoreServer]:
    """A core on the echo model services, one per test module."""
    settings = core_settings(
        consul_server.addr,
        make_database(postgres_server),
        tmp_path_factory.mktemp("qdrant-api"),
        redis_cluster_nodes=[f"{h}:{p}" for h, p in redis_cluster.startup_nodes],
        **{**echo_settings_overrides(), **core_overrides},
    )
    server = await CoreServer(settings).start()
    yield server
    await server.stop()
