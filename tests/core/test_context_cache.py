"""ContextCache and ConversationStore against a real Redis Cluster and a standalone Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from morgan.core.storage.cache import ContextCache, context_key, parse_nodes
from morgan.core.storage.context import ConversationStore
from morgan.core.storage.conversations import ConversationRepository
from morgan.core.storage.models import Turn

from tests.harness.servers import RedisCluster, RedisServer

pytestmark = pytest.mark.integration


def _turn(i: int, cid: str = "c1") -> Turn:
    return Turn(
        id=f"t{i}",
        conversation_id=cid,
        user_text=f"u{i}",
        assistant_text=f"a{i}",
        source="text",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        timings={"llm_ms": 1.5},
    )


async def test_cluster_roundtrip_with_ttl(redis_cluster: RedisCluster) -> None:
    cache = ContextCache.cluster(redis_cluster.startup_nodes, ttl_s=3600)
    try:
        assert await cache.get_context("c1") is None
        assert await cache.set_context("c1", [_turn(1), _turn(2)])
        got = await cache.get_context("c1")
        assert got == [_turn(1), _turn(2)]
        ttl = await cache.ttl("c1")
        assert ttl is not None and 3590 <= ttl <= 3600
        assert (cache.hits, cache.misses) == (1, 1)
        await cache.invalidate("c1")
        assert await cache.get_context("c1") is None
    finally:
        await cache.close()


async def test_standalone_roundtrip_and_unreadable_entry(redis_server: RedisServer) -> None:
    cache = ContextCache.standalone(redis_server.url, ttl_s=60)
    try:
        await cache.set_context("c2", [_turn(1, "c2")])
        assert await cache.get_context("c2") == [_turn(1, "c2")]
        redis_server.client().set(context_key("c3"), b"{not json")
        assert await cache.get_context("c3") is None
        assert redis_server.client().exists(context_key("c3")) == 0
    finally:
        await cache.close()


async def test_stopped_redis_reports_misses_not_errors(tmp_path: Path) -> None:
    with RedisServer.run(tmp_path) as server:
        cache = ContextCache.standalone(server.url, ttl_s=60)
        cache._cooldown_s = 0.0  # ask Redis every time so each call meets the outage
        await cache.set_context("c", [_turn(1)])
        server.stop()
        assert await cache.get_context("c") is None
        assert await cache.set_context("c", [_turn(2)]) is False
        assert await cache.invalidate("c") is False
        assert await cache.ping() is False
        assert cache.errors >= 3
        server.start()
        assert await cache.set_context("c", [_turn(3)]) is True
        assert await cache.get_context("c") == [_turn(3)]
        await cache.close()


@pytest.mark.unit
def test_cached_turns_keep_the_interrupted_mark_and_older_entries_read_as_not() -> None:
    cut = Turn(**{**_turn(1).__dict__, "interrupted": True})
    assert Turn.from_cache(cut.to_cache()) == cut
    older = _turn(2).to_cache()
    del older["interrupted"]  # written by a core from before interruptions
    assert Turn.from_cache(older) == _turn(2)


def test_parse_nodes_explains_bad_entries() -> None:
    assert parse_nodes(["a:1", "10.0.0.2:6380"]) == [("a", 1), ("10.0.0.2", 6380)]
    with pytest.raises(ValueError, match="host:port"):
        parse_nodes(["nohost"])


async def test_store_cache_aside_warm_and_hot_refresh(
    pg_dsn: str, redis_cluster: RedisCluster
) -> None:
    repo = ConversationRepository(pg_dsn)
    await repo.start()
    cache = ContextCache.cluster(redis_cluster.startup_nodes)
    store = ConversationStore(repo, cache, context_turns=3)
    try:
        cids = [await repo.create_conversation("gina") for _ in range(4)]
        for n, cid in enumerate(cids):
            await repo.add_turn(cid, f"q{n}", f"a{n}", source="text")
            await cache.invalidate(cid)
        # The three most recent conversations are warmed; the oldest is not.
        assert await store.warm(3) == 3
        assert await cache.get_context(cids[0]) is None
        for cid in cids[1:]:
            warmed = await cache.get_context(cid)
            assert warmed is not None and len(warmed) == 1
        # Cache-aside: a miss loads from PostgreSQL and fills the cache.
        ctx = await store.context(cids[0])
        assert [t.user_text for t in ctx] == ["q0"]
        assert await cache.get_context(cids[0]) == ctx
        # Writes go to PostgreSQL first, then the cache holds the last context_turns.
        prev = ctx
        for i in range(4):
            turn = await store.record_turn(cids[0], prev, f"x{i}", "y", source="text", timings={})
            prev = [*prev, turn][-3:]
        cached = await cache.get_context(cids[0])
        assert cached is not None and [t.user_text for t in cached] == ["x1", "x2", "x3"]
        # A hot entry changed behind the cache's back is refreshed from PostgreSQL.
        await repo.clear_turns(cids[0])
        assert await store.refresh_hot(1) == 1
        assert await cache.get_context(cids[0]) == []
    finally:
        await cache.close()
        await repo.close()
