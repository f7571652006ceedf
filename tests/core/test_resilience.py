"""core keeps every acknowledged turn through PostgreSQL drops, Redis outages, its own
restart and the loss of a model-service instance."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.core.conftest import ApiKeys, echo_settings_overrides, make_database
from tests.core.servers import CoreServer, ModelInstance, core_settings, echo_instance
from tests.harness.servers import ConsulServer, PostgresServer, RedisCluster, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def _turn(c: httpx.AsyncClient, text: str, user: str, cid: str | None = None) -> dict:
    body = {"text": text, "user_id": user, **({"conversation_id": cid} if cid else {})}
    resp = await c.post("/api/text", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _client(core: CoreServer, keys: ApiKeys) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=core.url, headers=keys.headers, timeout=30)


async def _count_turns(dsn: str, cid: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM turns WHERE conversation_id = $1", uuid.UUID(cid)
        ))  # fmt: skip
    finally:
        await conn.close()


async def test_terminated_backends_mid_run_lose_no_turn(
    consul_server: ConsulServer, postgres_server: PostgresServer, redis_cluster: RedisCluster,
    echo_models: dict[str, ModelInstance], api_keys: ApiKeys, tmp_path: Path,
) -> None:  # fmt: skip
    dsn = make_database(postgres_server)
    dbname = dsn.rsplit("/", 1)[1]
    core = await CoreServer(core_settings(
        consul_server.addr, dsn, tmp_path / "q",
        redis_cluster_nodes=[f"{h}:{p}" for h, p in redis_cluster.startup_nodes],
        **echo_settings_overrides(),
    )).start()  # fmt: skip
    stop = asyncio.Event()
    kills = 0

    async def killer() -> None:
        nonlocal kills
        rounds = 0
        while rounds < 3 and not stop.is_set():  # three rounds that killed something
            out = await asyncio.to_thread(
                postgres_server.psql,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()",
            )
            killed = int(out.strip() or 0)
            kills += killed
            rounds += 1 if killed else 0
            await asyncio.sleep(0.3)
        stop.set()

    try:
        async with _client(core, api_keys) as c:
            cid = (await _turn(c, "start", "pg-user"))["conversation_id"]
            task = asyncio.create_task(killer())

            async def talker(n: int) -> list[str]:
                acked: list[str] = []
                i = 0
                while not stop.is_set() or i < 3:
                    await _turn(c, f"t{n}-{i}", "pg-user", cid)
                    acked.append(f"t{n}-{i}")
                    i += 1
                return acked

            acked = [t for batch in await asyncio.gather(*(talker(n) for n in range(4)))
                     for t in batch]  # fmt: skip
            await task
            conv = (await c.get(f"/api/conversations/{cid}")).json()
        assert kills > 0
        assert core.orchestrator.store.repo.retries > 0
        stored = [t["user_text"] for t in conv["turns"]]
        assert sorted(stored) == sorted(["start", *acked])  # every acknowledged turn, once
        assert await _count_turns(dsn, cid) == len(acked) + 1
    finally:
        stop.set()
        await core.stop()


async def test_redis_stopped_turns_are_served_from_postgres(
    consul_server: ConsulServer, postgres_server: PostgresServer,
    echo_models: dict[str, ModelInstance], api_keys: ApiKeys, tmp_path: Path,
) -> None:  # fmt: skip
    with RedisServer.run(tmp_path / "redis") as redis:
        core = await CoreServer(core_settings(
            consul_server.addr, make_database(postgres_server), tmp_path / "q",
            redis_url=redis.url, **echo_settings_overrides(),
        )).start()  # fmt: skip
        cache = core.orchestrator.store.cache
        try:
            async with _client(core, api_keys) as c:
                cid = (await _turn(c, "first", "redis-user"))["conversation_id"]
                await _turn(c, "second", "redis-user", cid)
                assert cache.hits >= 1  # the second turn read its context from Redis
                redis.stop()
                third = await _turn(c, "third", "redis-user", cid)
                assert "This is turn 3." in third["text"]  # context came from PostgreSQL
                assert cache.errors >= 1
                conv = (await c.get(f"/api/conversations/{cid}")).json()
                assert [t["user_text"] for t in conv["turns"]] == ["first", "second", "third"]
                new = await _turn(c, "fresh", "redis-user")
                assert "This is turn 1." in new["text"]
                ready = await c.get("/ready")
                assert ready.status_code == 200  # Redis is not needed to be ready
                redis.start()
                cache._down_until = 0.0
                fourth = await _turn(c, "fourth", "redis-user", cid)
                assert "This is turn 4." in fourth["text"]
                assert await cache.get_context(cid) is not None  # cached again
        finally:
            await core.stop()


async def test_conversation_is_whole_after_core_restart(
    consul_server: ConsulServer, postgres_server: PostgresServer, redis_cluster: RedisCluster,
    echo_models: dict[str, ModelInstance], api_keys: ApiKeys, tmp_path: Path,
) -> None:  # fmt: skip
    settings = core_settings(
        consul_server.addr, make_database(postgres_server), tmp_path / "q",
        redis_cluster_nodes=[f"{h}:{p}" for h, p in redis_cluster.startup_nodes],
        cache_warm_count=10, **echo_settings_overrides(),
    )  # fmt: skip
    core = await CoreServer(settings).start()
    try:
        async with _client(core, api_keys) as c:
            cid = (await _turn(c, "I live in Porto", "restart-user"))["conversation_id"]
            await _turn(c, "second", "restart-user", cid)
    finally:
        await core.stop()
    # Drop the cached copy so the restarted core must warm it from PostgreSQL.
    import redis as redis_lib

    nodes = [redis_lib.cluster.ClusterNode(h, p) for h, p in redis_cluster.startup_nodes]
    redis_lib.RedisCluster(startup_nodes=nodes).delete(f"morgan:ctx:{{{cid}}}")
    core = await CoreServer(settings).start()
    try:
        assert await core.orchestrator.store.cache.get_context(cid) is not None  # warmed
        async with _client(core, api_keys) as c:
            conv = (await c.get(f"/api/conversations/{cid}")).json()
            assert [t["user_text"] for t in conv["turns"]] == ["I live in Porto", "second"]
            third = await _turn(c, "third", "restart-user", cid)
            assert "This is turn 3." in third["text"]
            hits = await c.get(
                "/api/memory/search", params={"q": "where do I live", "user_id": "restart-user"}
            )
            assert hits.json()["results"][0]["text"] == "I live in Porto"
    finally:
        await core.stop()


@pytest.fixture
async def two_llms(
    consul_server: ConsulServer, tmp_path: Path
) -> AsyncIterator[list[ModelInstance]]:
    name = f"test-ha-llm-{uuid.uuid4().hex[:6]}"
    pair = [echo_instance(name, consul_server.addr, tmp_path) for _ in range(2)]
    for inst in pair:
        inst.process.start()
    for inst in pair:
        await asyncio.to_thread(inst.start)
    yield pair
    for inst in pair:
        inst.stop()


async def test_killed_model_instance_turn_still_succeeds(
    consul_server: ConsulServer, postgres_server: PostgresServer,
    echo_models: dict[str, ModelInstance], two_llms: list[ModelInstance],
    api_keys: ApiKeys, tmp_path: Path,
) -> None:  # fmt: skip
    overrides = {**echo_settings_overrides(), "llm_service": two_llms[0].name}
    core = await CoreServer(core_settings(
        consul_server.addr, make_database(postgres_server), tmp_path / "q",
        discovery_cache_seconds=30.0, **overrides,
    )).start()  # fmt: skip
    try:
        async with _client(core, api_keys) as c:
            for i in range(4):  # both instances are in use
                await _turn(c, f"warm {i}", "ha-user")
            two_llms[0].kill()  # still listed as passing in Consul for now
            results = [await _turn(c, f"after kill {i}", "ha-user") for i in range(6)]
        assert all(r["text"].startswith("You said: after kill") for r in results)
    finally:
        await core.stop()
