"""ConversationStore: the context read path (cache-aside) and the turn write path."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from morgan.core.storage.cache import ContextCache
from morgan.core.storage.conversations import ConversationRepository
from morgan.core.storage.models import Turn

log = logging.getLogger(__name__)


class ConversationStore:
    def __init__(
        self,
        repo: ConversationRepository,
        cache: ContextCache,
        *,
        context_turns: int = 10,
    ) -> None:
        self.repo = repo
        self.cache = cache
        self.context_turns = context_turns
        self._refresher: asyncio.Task[None] | None = None
        self._refresh_every: tuple[float, int] | None = None

    async def context(self, conversation_id: str) -> list[Turn]:
        """Recent turns, from Redis if there, else from PostgreSQL (and then cached)."""
        cached = await self.cache.get_context(conversation_id)
        if cached is not None:
            return cached
        turns = await self.repo.recent_turns(conversation_id, self.context_turns)
        await self.cache.set_context(conversation_id, turns)
        return turns

    async def record_turn(
        self,
        conversation_id: str,
        previous: list[Turn],
        user_text: str,
        assistant_text: str,
        *,
        source: str,
        timings: dict[str, float],
        turn_id: str | None = None,
        interrupted: bool = False,
    ) -> Turn:
        """Commit the turn to PostgreSQL, then refresh the cached context."""
        turn = await self.repo.add_turn(
            conversation_id,
            user_text,
            assistant_text,
            source=source,
            timings=timings,
            turn_id=turn_id,
            interrupted=interrupted,
        )
        updated = [*previous, turn][-self.context_turns :]
        await self.cache.set_context(conversation_id, updated)
        return turn

    async def mark_interrupted(self, conversation_id: str, turn_id: str) -> bool:
        """Mark a committed turn as cut off, then re-read the cached context."""
        marked = await self.repo.mark_interrupted(turn_id)
        await self.refresh(conversation_id)
        return marked

    async def refresh(self, conversation_id: str) -> None:
        turns = await self.repo.recent_turns(conversation_id, self.context_turns)
        await self.cache.set_context(conversation_id, turns)

    async def warm(self, count: int) -> int:
        """Load the ``count`` most recently active conversations into Redis."""
        if not self.cache.enabled or count <= 0:
            return 0
        warmed = 0
        for cid in await self.repo.recent_conversation_ids(count):
            turns = await self.repo.recent_turns(cid, self.context_turns)
            if await self.cache.set_context(cid, turns):
                warmed += 1
        log.info("cache: warmed %d of the %d most recent conversations", warmed, count)
        return warmed

    async def refresh_hot(self, count: int) -> int:
        refreshed = 0
        for cid in self.cache.take_hot(count):
            await self.refresh(cid)
            refreshed += 1
        return refreshed

    def start_background_refresh(self, interval_s: float, count: int) -> None:
        self._refresh_every = (interval_s, count)
        if not self.cache.enabled or interval_s <= 0:
            return

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await self.refresh_hot(count)
                except Exception as exc:  # keep refreshing; a failed round is not fatal
                    log.warning("cache: refreshing hot entries failed: %s", exc)

        self._refresher = asyncio.create_task(loop(), name="cache-refresh")

    async def set_background_refresh(self, interval_s: float, count: int) -> None:
        """Restart the hot-entry refresh with a new period and count (0 s: off)."""
        if self._refresh_every == (interval_s, count):
            return
        await self.stop()
        self.start_background_refresh(interval_s, count)

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
