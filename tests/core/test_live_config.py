"""A running core follows Consul KV: a setting written the way `morgan config set` writes
it (JSON under morgan/config/<service>/<key>) is used by the next turn, with no restart.

core runs over real HTTP with a loader on a private KV scope (so no other test sees its
keys), real PostgreSQL, and a private stand-in LLM that reports what each call carried."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from morgan.core.config import CoreSettings
from morgan.shared.config_loader import ConsulConfigLoader, kv_prefix
from morgan.shared.consul_client import ConsulClientFactory

from tests.core.conftest import ApiKeys, make_database
from tests.core.servers import CoreServer, ModelInstance, echo_instance
from tests.harness.ports import free_port
from tests.harness.servers import ConsulServer, PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
log = logging.getLogger(__name__)

PROPAGATION_TIMEOUT_S = 15.0


@pytest.fixture
def private_llm(consul_server: ConsulServer, tmp_path: Path) -> Any:
    inst = echo_instance(f"test-live-llm-{uuid.uuid4().hex[:6]}", consul_server.addr, tmp_path)
    inst.start()
    yield inst
    inst.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def live_core(
    consul_server: ConsulServer, postgres_server: PostgresServer, private_llm: ModelInstance,
    tmp_path: Path,
) -> AsyncIterator[tuple[CoreServer, str]]:  # fmt: skip
    """core on a private KV scope; yields the server and its KV prefix."""
    scope = f"core-live-{uuid.uuid4().hex[:8]}"
    start_values = {
        "host": "127.0.0.1", "bind_host": "127.0.0.1", "port": free_port(),
        "consul_http_addr": consul_server.addr, "postgres_dsn": make_database(postgres_server),
        "qdrant_path": str(tmp_path / "qdrant"), "memory_enabled": False,
        "shutdown_drain_seconds": 1, "discovery_cache_seconds": 1.0,
        "consul_check_interval": "1s", "llm_timeout_seconds": 20.0,
        "llm_service": private_llm.name, "register_in_consul": False,
    }  # fmt: skip
    yml = tmp_path / "core.yaml"
    yml.write_text(yaml.safe_dump(start_values))
    consul = ConsulClientFactory.from_env(consul_server.addr)
    loader = ConsulConfigLoader(
        CoreSettings, scope, consul, yaml_path=yml, environ={}, watch_wait_seconds=5
    )
    server = await CoreServer(loader.load(), config_loader=loader).start()
    try:
        yield server, kv_prefix(scope)
    finally:
        await server.stop()
        consul.client().kv.delete(kv_prefix(scope), recurse=True)


async def _turn(core: CoreServer, api_keys: ApiKeys, llm: ModelInstance) -> dict[str, Any]:
    """One text turn; returns what the LLM received for it."""
    async with httpx.AsyncClient(timeout=30) as client:
        before = (await client.get(llm.url + "/test/last")).json()["calls"]
        resp = await client.post(core.url + "/api/text", headers=api_keys.headers,
                                 json={"text": "hello", "user_id": "live-config"})  # fmt: skip
        assert resp.status_code == 200, resp.text
        seen: dict[str, Any] = (await client.get(llm.url + "/test/last")).json()
    assert seen["calls"] == before + 1, "the turn did not reach the private LLM"
    return seen


async def test_kv_change_reaches_the_next_turn_without_restart(
    live_core: tuple[CoreServer, str], private_llm: ModelInstance, api_keys: ApiKeys,
    consul_server: ConsulServer,
) -> None:  # fmt: skip
    core, prefix = live_core
    default = CoreSettings.model_fields["system_prompt"].default
    first = await _turn(core, api_keys, private_llm)
    assert first["messages"][0] == {"role": "system", "content": default}
    assert (first["params"]["max_tokens"], first["params"]["temperature"]) == (256, 0.7)
    assert first["params"]["min_tokens"] == 1, "a sampled reply must not end before a word"

    await asyncio.sleep(0.3)  # let the loader's blocking KV query start
    changes = {"system_prompt": "You are a terse pirate.", "llm_max_tokens": 77,
               "llm_temperature": 0.1, "max_inflight": 7}  # fmt: skip
    kv = ConsulClientFactory.from_env(consul_server.addr).client().kv
    for name, value in changes.items():
        kv.put(prefix + name, json.dumps(value))  # what `morgan config set` writes

    deadline = time.monotonic() + PROPAGATION_TIMEOUT_S
    tries = 0
    while True:
        tries += 1
        s: CoreSettings = core.app.state.settings
        now = (s.system_prompt, s.llm_max_tokens, s.llm_temperature,
               core.orchestrator.limiter.limit)  # fmt: skip
        if now == tuple(changes.values()):
            break
        log.warning("try %d: core still has %s, waiting for %s", tries, now,
                    tuple(changes.values()))  # fmt: skip
        assert time.monotonic() < deadline, (
            f"core did not follow morgan/config KV within {PROPAGATION_TIMEOUT_S:.0f} s "
            f"({tries} tries); it still has {now}"
        )
        await asyncio.sleep(0.2)

    following = await _turn(core, api_keys, private_llm)
    assert following["messages"][0] == {"role": "system", "content": "You are a terse pirate."}
    assert following["params"]["max_tokens"] == 77
    assert following["params"]["temperature"] == 0.1
