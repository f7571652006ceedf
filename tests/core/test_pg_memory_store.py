"""PgMemoryStore against a real PostgreSQL: the same behaviour as the Qdrant store, one
store shared by every core of a fleet (two stores on one database see each other's rows)."""

from __future__ import annotations

import pytest
from morgan.core.memory.embedder import SentenceEmbedder
from morgan.core.memory.pg_store import PgMemoryStore

from tests.core.test_memory_store import store_search_exclude_delete

pytestmark = pytest.mark.integration


async def test_store_search_exclude_and_delete(embedder: SentenceEmbedder, pg_dsn: str) -> None:
    store = PgMemoryStore(pg_dsn, embedder)
    await store.start()
    try:
        await store_search_exclude_delete(store, embedder)
    finally:
        await store.close()


async def test_two_cores_share_one_store(embedder: SentenceEmbedder, pg_dsn: str) -> None:
    first, second = PgMemoryStore(pg_dsn, embedder), PgMemoryStore(pg_dsn, embedder)
    await first.start()
    await second.start()
    try:
        mid = await first.store_memory("u1", "c1", "I park my bike in the garage")
        hits = await second.search_similar("u1", "where is my bicycle?", k=1)
        assert [h.id for h in hits] == [mid]
        # Storing the same id again replaces the memory instead of duplicating it.
        await second.store_memory("u1", "c1", "I park my bike in the shed", memory_id=mid)
        again = await first.search_similar("u1", "bicycle", k=5)
        assert [(h.id, h.text) for h in again] == [(mid, "I park my bike in the shed")]
    finally:
        await first.close()
        await second.close()


async def test_a_store_of_another_dimension_is_refused(
    embedder: SentenceEmbedder, pg_dsn: str
) -> None:
    store = PgMemoryStore(pg_dsn, embedder)
    await store.start()
    await store.store_memory("u1", "c1", "x", vector=[1.0, 0.0, 0.0])
    await store.close()
    with pytest.raises(RuntimeError, match=r"3-dimensional vectors.*DELETE FROM memories"):
        await PgMemoryStore(pg_dsn, embedder).start()


async def test_used_before_start_says_so(embedder: SentenceEmbedder, pg_dsn: str) -> None:
    with pytest.raises(RuntimeError, match="start"):
        await PgMemoryStore(pg_dsn, embedder).search_similar("u1", "x")
