"""MemoryStore: per-user semantic memory in Qdrant (server URL or embedded local mode).

Embedded local mode runs Qdrant inside this process and is synchronous (numpy and
SQLite), so every Qdrant call and every embedding runs in worker threads, never on
the event loop. Local mode allows one thread at a time; a server allows several.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from qdrant_client import QdrantClient, models

from morgan.core.memory.embedder import SentenceEmbedder

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Memory:
    id: str
    user_id: str
    conversation_id: str
    text: str
    score: float
    created_at: str


class SemanticMemory(Protocol):
    """What core needs of a memory store (Qdrant's MemoryStore, PostgreSQL's PgMemoryStore)."""

    embedder: SentenceEmbedder

    async def start(self) -> None: ...

    async def vector_size(self) -> int | None: ...

    async def embed(self, text: str) -> list[float]: ...

    async def store_memory(
        self,
        user_id: str,
        conversation_id: str,
        text: str,
        *,
        vector: list[float] | None = None,
        memory_id: str | None = None,
    ) -> str: ...

    async def search_similar(
        self,
        user_id: str,
        text: str,
        k: int = 5,
        *,
        vector: list[float] | None = None,
        exclude_conversation: str | None = None,
    ) -> list[Memory]: ...

    async def delete_conversation(self, conversation_id: str) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    def __init__(
        self,
        client: QdrantClient,
        embedder: SentenceEmbedder,
        *,
        collection: str = "morgan_memory",
        workers: int = 1,
    ) -> None:
        self._client = client
        self.embedder = embedder
        self.collection = collection
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qdrant")

    @classmethod
    def open(
        cls,
        embedder: SentenceEmbedder,
        *,
        url: str | None = None,
        path: str | Path | None = None,
        api_key: str | None = None,
        collection: str = "morgan_memory",
    ) -> MemoryStore:
        """A Qdrant server at ``url``, else embedded local mode in the directory ``path``."""
        if url:
            return cls(QdrantClient(url=url, api_key=api_key), embedder,
                       collection=collection, workers=4)  # fmt: skip
        if path:
            Path(path).mkdir(parents=True, exist_ok=True)
            return cls(QdrantClient(path=str(path)), embedder, collection=collection)
        raise ValueError(
            "semantic memory needs qdrant_url (a Qdrant server) or qdrant_path "
            "(a directory for embedded local mode); set one of them"
        )

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def start(self) -> None:
        """Create the collection with the embedding model's dimension if it is missing."""
        await self._run(self._start_sync)

    def _start_sync(self) -> None:
        dim = self.embedder.dimension
        if self._client.collection_exists(self.collection):
            size = self._vector_size_sync()
            if size is not None and size != dim:
                raise RuntimeError(
                    f"qdrant collection {self.collection!r} holds {size}-dimensional vectors "
                    f"but the embedding model makes {dim}; point memory_collection at a new "
                    "collection or delete the old one"
                )
            return
        self._client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
        )
        log.info("qdrant: created collection %s (dim %d)", self.collection, dim)

    def _vector_size_sync(self) -> int | None:
        vectors = self._client.get_collection(self.collection).config.params.vectors
        return vectors.size if isinstance(vectors, models.VectorParams) else None

    async def vector_size(self) -> int | None:
        return await self._run(self._vector_size_sync)

    async def embed(self, text: str) -> list[float]:
        return await self.embedder.embed(text)

    async def store_memory(
        self,
        user_id: str,
        conversation_id: str,
        text: str,
        *,
        vector: list[float] | None = None,
        memory_id: str | None = None,
    ) -> str:
        mid = memory_id or str(uuid.uuid4())
        vec = vector if vector is not None else await self.embedder.embed(text)
        point = models.PointStruct(
            id=mid,
            vector=vec,
            payload={
                "user_id": user_id,
                "conversation_id": conversation_id,
                "text": text,
                "created_at": datetime.now(UTC).isoformat(),
            },
        )
        await self._run(lambda: self._client.upsert(self.collection, points=[point]))
        return mid

    async def search_similar(
        self,
        user_id: str,
        text: str,
        k: int = 5,
        *,
        vector: list[float] | None = None,
        exclude_conversation: str | None = None,
    ) -> list[Memory]:
        vec = vector if vector is not None else await self.embedder.embed(text)
        must_not: list[models.Condition] | None = (
            [
                models.FieldCondition(
                    key="conversation_id", match=models.MatchValue(value=exclude_conversation)
                )
            ]
            if exclude_conversation
            else None
        )
        query_filter = models.Filter(
            must=[models.FieldCondition(key="user_id", match=models.MatchValue(value=user_id))],
            must_not=must_not,
        )
        result = await self._run(
            lambda: self._client.query_points(
                self.collection, query=vec, limit=k, query_filter=query_filter,
                with_payload=True,
            )
        )  # fmt: skip
        memories: list[Memory] = []
        for point in result.points:
            payload = point.payload or {}
            memories.append(
                Memory(
                    id=str(point.id),
                    user_id=str(payload.get("user_id", "")),
                    conversation_id=str(payload.get("conversation_id", "")),
                    text=str(payload.get("text", "")),
                    score=float(point.score),
                    created_at=str(payload.get("created_at", "")),
                )
            )
        return memories

    async def delete_conversation(self, conversation_id: str) -> None:
        selector = models.FilterSelector(
            filter=models.Filter(
                must=[
                    models.FieldCondition(
                        key="conversation_id", match=models.MatchValue(value=conversation_id)
                    )
                ]
            )
        )
        await self._run(lambda: self._client.delete(self.collection, points_selector=selector))

    async def close(self) -> None:
        await self._run(self._client.close)
        self._executor.shutdown(wait=True)
