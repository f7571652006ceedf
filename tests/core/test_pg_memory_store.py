"""PgMemoryStore against a real PostgreSQL: the same behaviour as the Qdrant store, one
store shared by every core of a fleet (two stores on one database see each other's rows)."""

from __future__ import annotations

import pytest
from morgan.core.memory.embedder import SentenceEmbedder
from morgan.core.memory.pg_store import PgMemoryStore

pytestmark = pytest.mark.integration


async def test_store_search_exclude_and_delete(embedder: SentenceEmbedder, pg_dsn: str) -> None:
    store = PgMemoryStore(pg_dsn, embedder)
    await store.start()
    try:
        assert await store.vector_size() == embedder.dimension
        await store.start()  # idempotent
        await store.store_memory("u1", "c1", "My sister Anna lives in Lisbon")
        await store.store_memory("u1", "c1", "I am allergic to peanuts")
        await store.store_memory("u1", "c2", "My favourite band is Radiohead")
        await store.store_memory("u2", "c3", "I am allergic to cats")
        hits = await store.search_similar("u1", "what food allergies do I have?", k=2)
        assert hits[0].text == "I am allergic to peanuts"
        assert {h.user_id for h in hits} == {"u1"}
        assert hits[0].score > hits[1].score
        other = await store.search_similar("u2", "allergy", k=5)
        assert [h.text for h in other] == ["I am allergic to cats"]
        excl = await store.search_similar("u1", "allergy", k=5, exclude_conversation="c1")
        assert [h.text for h in excl] == ["My favourite band is Radiohead"]
        await store.delete_conversation("c1")
        left = await store.search_similar("u1", "anything", k=5)
        assert [h.text for h in left] == ["My favourite band is Radiohead"]
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
