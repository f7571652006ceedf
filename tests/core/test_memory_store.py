"""MemoryStore in Qdrant's embedded local mode with the bundled MiniLM embedder."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from morgan.core.memory.embedder import SentenceEmbedder
from morgan.core.memory.onnx_export import bundled_model_dir
from morgan.core.memory.store import MemoryStore, SemanticMemory

pytestmark = pytest.mark.integration


async def store_search_exclude_delete(store: SemanticMemory, embedder: SentenceEmbedder) -> None:
    """What every memory store does (Qdrant's and PostgreSQL's): run on a started store."""
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


@pytest.mark.unit
def test_bundled_model_is_a_local_directory() -> None:
    path = bundled_model_dir()
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()


def test_embeddings_are_normalised_and_meaningful(embedder: SentenceEmbedder) -> None:
    assert embedder.dimension == 384
    cat = embedder.embed_sync("my cat likes to sleep on the sofa")
    kitten = embedder.embed_sync("the kitten naps on the couch")
    tax = embedder.embed_sync("quarterly tax filing deadline")
    assert math.isclose(sum(x * x for x in cat), 1.0, rel_tol=1e-3)

    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert dot(cat, kitten) > dot(cat, tax) + 0.2


async def test_collection_created_with_model_dimension_and_search(
    embedder: SentenceEmbedder, qdrant_path: Path
) -> None:
    store = MemoryStore.open(embedder, path=qdrant_path, collection="mem_test")
    await store.start()
    try:
        await store_search_exclude_delete(store, embedder)
    finally:
        await store.close()


async def test_memories_survive_reopening_the_directory(
    embedder: SentenceEmbedder, qdrant_path: Path
) -> None:
    store = MemoryStore.open(embedder, path=qdrant_path)
    await store.start()
    await store.store_memory("u9", "c9", "The spare key is under the blue flower pot")
    await store.close()
    reopened = MemoryStore.open(embedder, path=qdrant_path)
    await reopened.start()
    try:
        hits = await reopened.search_similar("u9", "where is the spare key?", k=1)
        assert [h.text for h in hits] == ["The spare key is under the blue flower pot"]
    finally:
        await reopened.close()


async def test_wrong_dimension_collection_is_refused(
    embedder: SentenceEmbedder, qdrant_path: Path
) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(qdrant_path))
    client.create_collection(
        "old", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE)
    )
    store = MemoryStore(client, embedder, collection="old")
    with pytest.raises(RuntimeError, match=r"8-dimensional.*makes 384"):
        await store.start()
    await store.close()


@pytest.mark.unit
def test_open_without_url_or_path_says_what_to_set(embedder: SentenceEmbedder) -> None:
    with pytest.raises(ValueError, match=r"qdrant_url.*qdrant_path"):
        MemoryStore.open(embedder)


async def test_concurrent_embeddings_are_batched_and_match_single_ones(
    embedder: SentenceEmbedder,
) -> None:
    texts = [f"note number {i} about the garden" for i in range(20)]
    before = embedder.batches
    vectors = await asyncio.gather(*(embedder.embed(t) for t in texts))
    used = embedder.batches - before
    assert 1 <= used < len(texts)  # fewer model calls than texts
    for text, vector in zip(texts[:3], vectors[:3], strict=True):
        single = embedder.embed_sync(text)
        assert sum(a * b for a, b in zip(single, vector, strict=True)) > 0.999
