"""MemoryStore: per-user semantic memory in Qdrant (server URL or embedded local mode)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from qdrant_client import AsyncQdrantClient, models

from morgan.core.memory.embedder import SentenceEmbedder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Memory:
    id: str
    user_id: str
    conversation_id: str
    text: str
    score: float
    created_at: str


class MemoryStore:
    def __init__(
        self,
        client: AsyncQdrantClient,
        embedder: SentenceEmbedder,
        *,
        collection: str = "morgan_memory",
    ) -> None:
        self._client = client
        self.embedder = embedder
        self.collection = collection

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
            client = AsyncQdrantClient(url=url, api_key=api_key)
        elif path:
            Path(path).mkdir(parents=True, exist_ok=True)
            client = AsyncQdrantClient(path=str(path))
        else:
            raise ValueError(
                "semantic memory needs qdrant_url (a Qdrant server) or qdrant_path "
                "(a directory for embedded local mode); set one of them"
            )
        return cls(client, embedder, collection=collection)

    async def start(self) -> None:
        """Create the collection with the embedding model's dimension if it is missing."""
        dim = self.embedder.dimension
        if await self._client.collection_exists(self.collection):
            info = await self._client.get_collection(self.collection)
            vectors = info.config.params.vectors
            size = vectors.size if isinstance(vectors, models.VectorParams) else None
            if size is not None and size != dim:
                raise RuntimeError(
                    f"qdrant collection {self.collection!r} holds {size}-dimensional vectors "
                    f"but the embedding model makes {dim}; point memory_collection at a new "
                    "collection or delete the old one"
                )
            return
        await self._client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
        )
        log.info("qdrant: created collection %s (dim %d)", self.collection, dim)

    async def vector_size(self) -> int | None:
        info = await self._client.get_collection(self.collection)
        vectors = info.config.params.vectors
        return vectors.size if isinstance(vectors, models.VectorParams) else None

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
        await self._client.upsert(
            self.collection,
            points=[
                models.PointStruct(
                    id=mid,
                    vector=vec,
                    payload={
                        "user_id": user_id,
                        "conversation_id": conversation_id,
                        "text": text,
                        "created_at": datetime.now(UTC).isoformat(),
                    },
                )
            ],
        )
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
        result = await self._client.query_points(
            self.collection,
            query=vec,
            limit=k,
            query_filter=models.Filter(
                must=[models.FieldCondition(key="user_id", match=models.MatchValue(value=user_id))],
                must_not=must_not,
            ),
            with_payload=True,
        )
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
        await self._client.delete(
            self.collection,
            points_selector=models.FilterSelector(
                filter=models.Filter(
                    must=[
                        models.FieldCondition(
                            key="conversation_id", match=models.MatchValue(value=conversation_id)
                        )
                    ]
                )
            ),
        )

    async def close(self) -> None:
        await self._client.close()
