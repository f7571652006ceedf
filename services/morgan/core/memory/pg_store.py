"""PgMemoryStore: semantic memory in the stack's PostgreSQL, one store for every core.

For fleets without a Qdrant server: each memory is a row with its embedding as
`float8[]`; a search scores a user's memories by cosine similarity in SQL (the embedder's
vectors are L2-normalised, so the dot product is the cosine). The rows live with the
conversations, so they are replicated and failed over with them. Same interface as
MemoryStore.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg

from morgan.core.memory.embedder import SentenceEmbedder
from morgan.core.memory.store import Memory

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id uuid PRIMARY KEY,
    user_id text NOT NULL,
    conversation_id text NOT NULL,
    text text NOT NULL,
    embedding float8[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS memories_user ON memories (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS memories_conversation ON memories (conversation_id);
"""

_SEARCH = """
SELECT id, user_id, conversation_id, text, created_at,
       (SELECT sum(a * b) FROM unnest(embedding, $2::float8[]) AS v(a, b)) AS score
FROM memories
WHERE user_id = $1 AND conversation_id IS DISTINCT FROM $4
ORDER BY score DESC NULLS LAST
LIMIT $3
"""


class PgMemoryStore:
    def __init__(
        self, dsn: str, embedder: SentenceEmbedder, *, min_size: int = 1, max_size: int = 4
    ) -> None:
        self._dsn = dsn
        self.embedder = embedder
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None

    def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PgMemoryStore.start() was not awaited")
        return self._pool

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=self._min_size, max_size=self._max_size
        )
        async with self._pool.acquire() as conn:
            await conn.execute(_SCHEMA)
            size = await conn.fetchval("SELECT array_length(embedding, 1) FROM memories LIMIT 1")
        if size is not None and size != self.embedder.dimension:
            raise RuntimeError(
                f"the memories table holds {size}-dimensional vectors but the embedding model"
                f" makes {self.embedder.dimension}; delete its rows (DELETE FROM memories) or"
                " go back to the old model"
            )

    async def vector_size(self) -> int | None:
        size = await self._ready().fetchval(
            "SELECT array_length(embedding, 1) FROM memories LIMIT 1"
        )
        return int(size) if size is not None else self.embedder.dimension

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
        await self._ready().execute(
            "INSERT INTO memories (id, user_id, conversation_id, text, embedding)"
            " VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (id) DO UPDATE SET text = excluded.text, embedding = excluded.embedding",
            uuid.UUID(mid), user_id, conversation_id, text, vec,
        )  # fmt: skip
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
        rows = await self._ready().fetch(_SEARCH, user_id, vec, k, exclude_conversation)
        return [
            Memory(
                id=str(r["id"]),
                user_id=r["user_id"],
                conversation_id=r["conversation_id"],
                text=r["text"],
                score=float(r["score"] or 0.0),
                created_at=r["created_at"].isoformat(),
            )
            for r in rows
        ]

    async def delete_conversation(self, conversation_id: str) -> None:
        await self._ready().execute(
            "DELETE FROM memories WHERE conversation_id = $1", conversation_id
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
