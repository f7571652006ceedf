"""Orchestrator: one conversational turn, STT -> (context + memory) -> LLM -> persist -> TTS.

The order matters for durability: the turn is committed to PostgreSQL right after
the LLM answers, before TTS and before anything is sent back, so an acknowledged
turn is never lost. TTS is optional: if it fails the text still goes back, with a
``warning``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from morgan.core.config import CoreSettings
from morgan.core.exceptions import NotFoundError, StorageUnavailableError, TurnError
from morgan.core.idempotency import TurnKey, check_repeat
from morgan.core.limiter import InflightLimiter
from morgan.core.memory.store import Memory, SemanticMemory
from morgan.core.metrics import CONVERSATIONS_STARTED_TOTAL, observe_turn
from morgan.core.model_clients import ModelClients, clean_text
from morgan.core.sentences import SentenceSplitter
from morgan.core.storage.context import ConversationStore
from morgan.core.storage.conversations import ConversationNotFoundError, DatabaseUnavailableError
from morgan.core.storage.models import Turn
from morgan.shared.settings import settings_source

log = logging.getLogger(__name__)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


@dataclass
class TurnResult:
    conversation_id: str
    turn_id: str
    text: str
    timings: dict[str, float]
    transcription: str | None = None
    audio: bytes | None = None
    audio_format: str | None = None
    warning: str | None = None
    memories_used: int = 0
    replayed: bool = False

    def to_response(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "turn_id": self.turn_id,
            "text": self.text,
            "transcription": self.transcription,
            "audio_base64": base64.b64encode(self.audio).decode() if self.audio else None,
            "audio_format": self.audio_format if self.audio else None,
            "warning": self.warning,
            "memories_used": self.memories_used,
            "timings": self.timings,
        }


@dataclass
class _Prepared:
    conversation_id: str
    turn_id: str
    previous: list[Turn]
    messages: list[dict[str, str]]
    vector: list[float] | None
    memories: list[Memory]
    timings: dict[str, float] = field(default_factory=dict)


class Orchestrator:
    """Runs turns with the settings `settings` gives now (read on every use); `apply` brings
    the parts built from settings (limiter, context length, cache TTL and refresh) in line
    after a change."""

    def __init__(
        self,
        settings: CoreSettings | Callable[[], CoreSettings],
        models: ModelClients,
        store: ConversationStore,
        memory: SemanticMemory | None,
    ) -> None:
        self._settings = settings_source(settings)
        self.models = models
        self.store = store
        self.memory = memory
        current = self.settings
        self.limiter = InflightLimiter(current.max_inflight, current.retry_after_seconds)
        self._applying = asyncio.Lock()

    @property
    def settings(self) -> CoreSettings:
        return self._settings()

    async def apply(self, new: CoreSettings) -> None:
        """Follow a settings change in what was built from the old settings."""
        async with self._applying:
            self.limiter.limit = new.max_inflight
            self.limiter.retry_after_s = new.retry_after_seconds
            self.store.context_turns = max(1, new.context_turns)
            self.store.cache.ttl_s = new.cache_ttl_seconds
            await self.store.set_background_refresh(
                new.cache_refresh_seconds, new.cache_refresh_count
            )

    # -- shared steps ----------------------------------------------------------------

    async def _conversation(
        self, user_id: str, conversation_id: str | None, key: TurnKey | None
    ) -> str:
        try:
            if conversation_id is None:
                cid = key.conversation_id if key else str(uuid.uuid4())
                if await self.store.repo.insert_conversation(cid, user_id):
                    CONVERSATIONS_STARTED_TOTAL.inc()
                return cid
            conv = await self.store.repo.get_conversation(conversation_id)
        except DatabaseUnavailableError as exc:
            raise StorageUnavailableError(str(exc), headers={"Retry-After": "2"}) from exc
        if conv is None or conv.user_id != user_id:
            raise NotFoundError(
                f"conversation {conversation_id} does not exist for user {user_id}; "
                "omit conversation_id to start a new one"
            )
        return conv.id

    async def _prepare(
        self, user_id: str, text: str, conversation_id: str | None, key: TurnKey | None = None
    ) -> _Prepared:
        s = self.settings
        timings: dict[str, float] = {}
        # The embedding (CPU) does not depend on the conversation: it runs while the
        # conversation and its context are read (I/O), instead of after them.
        embedding = (
            asyncio.ensure_future(self.memory.embedder.embed(text))
            if self.memory is not None
            else None
        )
        t = time.perf_counter()
        try:
            cid = await self._conversation(user_id, conversation_id, key)
            try:
                previous = await self.store.context(cid) if s.context_turns else []
            except DatabaseUnavailableError as exc:
                raise StorageUnavailableError(str(exc), headers={"Retry-After": "2"}) from exc
        except BaseException:
            if embedding is not None:
                embedding.cancel()
            raise
        timings["context_ms"] = _ms(t)

        t = time.perf_counter()
        vector: list[float] | None = None
        memories: list[Memory] = []
        if self.memory is not None and embedding is not None:
            try:
                vector = await embedding
                if s.memory_top_k:
                    found = await self.memory.search_similar(
                        user_id, text, s.memory_top_k,
                        vector=vector, exclude_conversation=cid,
                    )  # fmt: skip
                    memories = [m for m in found if m.score >= s.memory_min_score]
            except Exception as exc:  # memory only enriches a turn; never fail it
                log.warning("memory search failed, answering without memories: %s", exc)
        timings["memory_ms"] = _ms(t)
        return _Prepared(
            conversation_id=cid,
            turn_id=key.turn_id if key else str(uuid.uuid4()),
            previous=previous,
            messages=self._messages(s, previous, memories, text),
            vector=vector,
            memories=memories,
            timings=timings,
        )

    @staticmethod
    def _messages(
        s: CoreSettings, previous: list[Turn], memories: list[Memory], text: str
    ) -> list[dict[str, str]]:
        system = s.system_prompt
        if memories:
            facts = "\n".join(f"- {m.text}" for m in memories)
            system += f"\n\nThings the user said in earlier conversations:\n{facts}"
        messages = [{"role": "system", "content": system}]
        for turn in previous[-s.context_turns :] if s.context_turns else []:
            messages.append({"role": "user", "content": turn.user_text})
            messages.append({"role": "assistant", "content": turn.assistant_text})
        messages.append({"role": "user", "content": text})
        return messages

    async def _persist(
        self, prep: _Prepared, user_id: str, user_text: str, reply: str, source: str
    ) -> str:
        """Commit the turn; return the reply as stored (a concurrent repeat of the same
        Idempotency-Key may have stored its own first)."""
        t = time.perf_counter()
        try:
            stored = await self.store.record_turn(
                prep.conversation_id, prep.previous, user_text, reply,
                source=source, timings=prep.timings, turn_id=prep.turn_id,
            )  # fmt: skip
        except ConversationNotFoundError as exc:
            raise NotFoundError(str(exc)) from exc
        except DatabaseUnavailableError as exc:
            raise StorageUnavailableError(
                f"the reply could not be saved, so it is not sent: {exc}",
                headers={"Retry-After": "2"},
            ) from exc
        prep.timings["persist_ms"] = _ms(t)
        if self.memory is not None:
            t = time.perf_counter()
            try:
                await self.memory.store_memory(
                    user_id, prep.conversation_id, user_text,
                    vector=prep.vector, memory_id=prep.turn_id,
                )  # fmt: skip
            except Exception as exc:
                log.warning("storing the turn in semantic memory failed: %s", exc)
            prep.timings["memory_ms"] = prep.timings.get("memory_ms", 0.0) + _ms(t)
        return stored.assistant_text

    async def _speak(self, text: str, key: str) -> tuple[bytes | None, str | None, float]:
        t = time.perf_counter()
        try:
            audio = await self.models.speak(text, self.settings.tts_timeout_seconds, key)
        except TurnError as exc:
            log.warning("tts failed, replying with text only: %s", exc.message)
            return None, f"no audio: {exc.message}", _ms(t)
        return audio, None, _ms(t)

    async def _replay(
        self,
        key: TurnKey | None,
        conversation_id: str | None,
        user_text: str | None,
        want_audio: bool,
    ) -> TurnResult | None:
        """The stored turn a repeated Idempotency-Key names, answered again; None if the
        key is new."""
        if key is None:
            return None
        try:
            stored = await self.store.repo.get_turn(key.turn_id)
        except DatabaseUnavailableError as exc:
            raise StorageUnavailableError(str(exc), headers={"Retry-After": "2"}) from exc
        if stored is None:
            return None
        check_repeat(key, stored, conversation_id, user_text)
        result = TurnResult(
            conversation_id=stored.conversation_id, turn_id=stored.id,
            text=stored.assistant_text, timings=dict(stored.timings),
            transcription=stored.user_text if stored.source == "audio" else None,
            replayed=True,
        )  # fmt: skip
        if want_audio and stored.assistant_text.strip():
            audio, result.warning, _ = await self._speak(stored.assistant_text, f"{stored.id}-tts")
            result.audio, result.audio_format = audio, "wav" if audio else None
        return result

    async def _store_interrupted(
        self, prep: _Prepared, user_id: str, user_text: str, said: str, persisted: bool
    ) -> None:
        """Keep a turn the person cut off: marked when it was already committed, else
        committed with the reply as far as it got. Storage trouble is logged, not raised:
        the person has already moved on to the next turn."""
        try:
            if persisted:
                await self.store.mark_interrupted(prep.conversation_id, prep.turn_id)
            else:
                await self.store.record_turn(
                    prep.conversation_id, prep.previous, user_text, clean_text(said),
                    source="stream", timings=prep.timings, turn_id=prep.turn_id,
                    interrupted=True,
                )  # fmt: skip
        except Exception as exc:
            log.warning("the interrupted turn %s was not stored: %s", prep.turn_id, exc)

    # -- turns -----------------------------------------------------------------------

    async def text_turn(
        self,
        user_id: str,
        text: str,
        conversation_id: str | None = None,
        *,
        want_audio: bool = False,
        transcription: str | None = None,
        source: str = "text",
        stt_ms: float = 0.0,
        started: float | None = None,
        key: TurnKey | None = None,
    ) -> TurnResult:
        start = started if started is not None else time.perf_counter()
        if done := await self._replay(key, conversation_id, text, want_audio):
            return done
        prep = await self._prepare(user_id, text, conversation_id, key)
        prep.timings["stt_ms"] = stt_ms
        t = time.perf_counter()
        reply = await self.models.complete(
            prep.messages, self.settings.llm_timeout_seconds, f"{prep.turn_id}-llm"
        )
        prep.timings["llm_ms"] = _ms(t)
        reply = await self._persist(prep, user_id, text, reply, source)
        result = TurnResult(
            conversation_id=prep.conversation_id,
            turn_id=prep.turn_id,
            text=reply,
            timings=prep.timings,
            transcription=transcription,
            memories_used=len(prep.memories),
        )
        prep.timings["tts_ms"] = 0.0
        if want_audio and reply.strip():
            audio, warning, tts_ms = await self._speak(reply, f"{prep.turn_id}-tts")
            prep.timings["tts_ms"] = tts_ms
            result.audio, result.warning = audio, warning
            result.audio_format = "wav" if audio else None
        prep.timings["total_ms"] = _ms(start)
        observe_turn(source, prep.timings, result.audio is not None)
        return result

    async def transcribe(
        self, audio: bytes, filename: str, content_type: str, language: str | None
    ) -> tuple[str, float]:
        t = time.perf_counter()
        text = await self.models.transcribe(
            audio, filename, content_type, language,
            self.settings.stt_timeout_seconds, uuid.uuid4().hex,
        )  # fmt: skip
        return text, _ms(t)

    async def audio_turn(
        self,
        user_id: str,
        audio: bytes,
        *,
        filename: str,
        content_type: str,
        language: str | None = None,
        conversation_id: str | None = None,
        want_audio: bool = True,
        key: TurnKey | None = None,
    ) -> TurnResult:
        start = time.perf_counter()
        if done := await self._replay(key, conversation_id, None, want_audio):
            return done
        text, stt_ms = await self.transcribe(audio, filename, content_type, language)
        if not text:
            from morgan.core.exceptions import InvalidInputError

            raise InvalidInputError(
                "no speech was recognised in the audio; speak closer to the microphone "
                "or send a longer recording"
            )
        return await self.text_turn(
            user_id, text, conversation_id,
            want_audio=want_audio, transcription=text, source="audio",
            stt_ms=stt_ms, started=start, key=key,
        )  # fmt: skip

    async def stream_turn(
        self,
        user_id: str,
        text: str,
        conversation_id: str | None,
        *,
        want_audio: bool = True,
        transcription: str | None = None,
        stt_ms: float = 0.0,
        started: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Events of a streamed turn: response_text deltas, response_audio per sentence,
        then response_complete once the turn is committed. Cancelled (the person spoke over
        the answer), the turn is stored as interrupted with the reply as far as it got."""
        start = started if started is not None else time.perf_counter()
        prep = await self._prepare(user_id, text, conversation_id)
        prep.timings["stt_ms"] = stt_ms
        splitter = SentenceSplitter()
        speech: list[asyncio.Task[tuple[bytes | None, str | None, float]]] = []
        sent_audio = 0
        warnings: list[str] = []
        tts_ms = 0.0
        parts: list[str] = []

        def queue_sentence(sentence: str) -> None:
            key = f"{prep.turn_id}-tts-{len(speech)}"
            speech.append(asyncio.create_task(self._speak(sentence, key)))

        async def ready_audio(block: bool) -> AsyncIterator[dict[str, Any]]:
            nonlocal sent_audio, tts_ms
            while sent_audio < len(speech) and (block or speech[sent_audio].done()):
                audio, warning, ms = await speech[sent_audio]
                tts_ms += ms
                if warning:
                    warnings.append(warning)
                elif audio:
                    yield {
                        "type": "response_audio",
                        "conversation_id": prep.conversation_id,
                        "index": sent_audio,
                        "format": "wav",
                        "data": base64.b64encode(audio).decode(),
                    }
                sent_audio += 1

        t = time.perf_counter()
        first_token_ms: float | None = None
        persisted = interrupted = False
        try:
            async for delta in self.models.stream(
                prep.messages, self.settings.llm_timeout_seconds, f"{prep.turn_id}-llm"
            ):
                if first_token_ms is None:
                    first_token_ms = _ms(start)
                parts.append(delta)
                yield {
                    "type": "response_text",
                    "conversation_id": prep.conversation_id,
                    "delta": delta,
                }
                if want_audio:
                    for sentence in splitter.feed(delta):
                        queue_sentence(sentence)
                    async for event in ready_audio(block=False):
                        yield event
            prep.timings["llm_ms"] = _ms(t)
            reply = "".join(parts)
            await self._persist(prep, user_id, text, reply, "stream")
            persisted = True
            if want_audio:
                rest = splitter.flush()
                if rest:
                    queue_sentence(rest)
                async for event in ready_audio(block=True):
                    yield event
        except asyncio.CancelledError:
            interrupted = True
            raise
        finally:
            for task in speech:
                task.cancel()
            if interrupted:
                # The LLM stream is closed (the cancellation went through it) and every
                # sentence's TTS call is cancelled before the turn is stored.
                await asyncio.shield(
                    self._store_interrupted(prep, user_id, text, "".join(parts), persisted)
                )
            for task in speech:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        prep.timings["tts_ms"] = round(tts_ms, 2)
        if first_token_ms is not None:
            prep.timings["first_token_ms"] = first_token_ms
        prep.timings["total_ms"] = _ms(start)
        observe_turn("stream", prep.timings, sent_audio > 0 and not warnings)
        yield {
            "type": "response_complete",
            "conversation_id": prep.conversation_id,
            "turn_id": prep.turn_id,
            "text": reply,
            "transcription": transcription,
            "warning": "; ".join(warnings) or None,
            "memories_used": len(prep.memories),
            "timings": prep.timings,
        }
