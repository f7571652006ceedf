"""Hands-free turns on /ws/stream: audio streams in without pause, morgan-vad finds where
each utterance ends, and each runs as a turn; speaking over an answer interrupts it.

After {"type": "start", "mode": "hands_free"} the client sends 16-bit little-endian mono
PCM at 16 kHz, as binary frames (or {"type": "audio", "data": <base64 PCM>}), and gets,
besides each turn's own events (transcription, response_text, response_audio,
response_complete):
  speech_started {start}            the person began speaking (seconds into the stream)
  partial_transcription {text}      what they said so far, while they speak
  speech_ended {start, end}         the utterance is over; its turn starts
When the morgan-vad instance goes away mid-session, core opens a stream to another one
and goes on (an utterance in progress then is lost), waiting up to SWITCH_SECONDS for one
(a restarted instance turns passing within Consul's check interval); with none by then it
says so (503), drops the audio, and tries again every LOST_REPORT_SECONDS while audio
comes in: the session goes on once an instance is back.
  interrupted {reaction_ms}         they spoke over the answer: stop playing it; the LLM
                                    and TTS for that turn are stopped (reaction_ms after
                                    morgan-vad reported the speech) and the turn is stored
                                    as interrupted, with the reply as far as it got
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import wave
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from morgan.core.exceptions import (
    InvalidInputError,
    PayloadTooLargeError,
    StageUnavailableError,
    TurnError,
)
from morgan.core.orchestrator import Orchestrator
from morgan.core.vad_stream import SAMPLE_RATE, VADStream

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
# A turn of the session: (text, transcription, stt_ms, started) -> runs it, sending events.
RunTurn = Callable[[str, str | None, float, float], Awaitable[None]]
# Audio kept from before a speech start: the start is reported after min_speech_ms of
# speech, back-dated to where it began.
PREROLL_SECONDS = 2.0
# The largest PCM frame taken: 2 s (morgan-vad's own frame limit is 64 KiB).
MAX_FRAME_BYTES = 64000
# With no morgan-vad left, audio frames are answered 503 at most this often, and a new
# stream is tried as often.
LOST_REPORT_SECONDS = 5.0
# How long a session whose morgan-vad went away waits for another one (Consul's default
# check interval is 10 s: a restarted instance can stay critical that long), trying every
# SWITCH_RETRY_SECONDS.
SWITCH_SECONDS = 15.0
SWITCH_RETRY_SECONDS = 1.0


def pcm_to_wav(pcm: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)
    return buffer.getvalue()


async def _open_vad(orch: Orchestrator, exclude: frozenset[str] = frozenset()) -> VADStream:
    s = orch.settings
    return await VADStream.open(
        orch.models.http, s.vad_service, orch.models.headers, s.vad_timeout_seconds, exclude
    )


class HandsFree:
    def __init__(
        self,
        orch: Orchestrator,
        vad: VADStream,
        send: Send,
        run_turn: RunTurn,
        count_turn: Callable[[], Awaitable[None]],
        language: str | None,
    ) -> None:
        self.orch = orch
        self.vad = vad
        self.send = send
        self.run_turn = run_turn
        self.count_turn = count_turn
        self.language = language
        self.buffer = bytearray()
        self.base = 0  # stream sample of buffer[0]
        self.samples = 0  # samples received
        self.speech_from: float | None = None
        self.offset = 0.0  # stream time of the current morgan-vad stream's first sample
        self.lost: TurnError | None = None  # no morgan-vad instance is left
        self.lost_reported = 0.0
        self.partial_at = 0.0
        self.turn: asyncio.Task[None] | None = None
        self.partial: asyncio.Task[None] | None = None
        self.reader = asyncio.create_task(self._read(), name="hands-free-vad")

    @classmethod
    async def open(
        cls,
        orch: Orchestrator,
        send: Send,
        run_turn: RunTurn,
        count_turn: Callable[[], Awaitable[None]],
        language: str | None,
    ) -> HandsFree:
        return cls(orch, await _open_vad(orch), send, run_turn, count_turn, language)

    # -- audio in ----------------------------------------------------------------

    async def audio(self, pcm: bytes) -> None:
        if self.lost is not None:
            now = time.monotonic()
            if now - self.lost_reported >= LOST_REPORT_SECONDS:
                self.lost_reported = now
                if self.reader.done():
                    self.reader = asyncio.create_task(self._recover(), name="hands-free-vad")
                raise self.lost
            return
        if len(pcm) % 2:
            raise InvalidInputError(
                "hands-free audio is 16-bit PCM: a frame must hold whole samples (even bytes)"
            )
        if len(pcm) > MAX_FRAME_BYTES:
            raise PayloadTooLargeError(
                f"a PCM frame of {len(pcm)} bytes is over {MAX_FRAME_BYTES} (2 s); send "
                "20-100 ms frames"
            )
        self.buffer += pcm
        self.samples += len(pcm) // 2
        with contextlib.suppress(ConnectionClosed):  # the reader moves to another instance
            await self.vad.send(pcm)
        self._trim()
        self._maybe_partial()

    def _trim(self) -> None:
        s = self.orch.settings
        if self.speech_from is None:
            keep = int(PREROLL_SECONDS * SAMPLE_RATE) * 2
        elif self.samples / SAMPLE_RATE - self.speech_from > s.max_audio_seconds:
            # Speech that never ends (a radio next to the microphone): start over.
            log.warning("hands-free: an utterance ran past max_audio_seconds; dropped")
            self.speech_from = None
            keep = 0
        else:
            return
        excess = len(self.buffer) - keep
        if excess > 0:
            del self.buffer[:excess]
            self.base += excess // 2

    def _slice(self, start: float, end: float) -> bytes:
        first = max(int(start * SAMPLE_RATE) - self.base, 0)
        last = max(int(end * SAMPLE_RATE) - self.base, first)
        return bytes(self.buffer[first * 2 : last * 2])

    def _maybe_partial(self) -> None:
        every = self.orch.settings.hands_free_partial_seconds
        if self.speech_from is None or not every:
            return
        if self.partial is not None and not self.partial.done():
            return
        spoken = self.samples / SAMPLE_RATE - self.speech_from
        if spoken - self.partial_at < every:
            return
        self.partial_at = spoken
        audio = self._slice(self.speech_from, self.samples / SAMPLE_RATE)
        self.partial = asyncio.create_task(self._partial(audio), name="hands-free-partial")

    async def _partial(self, pcm: bytes) -> None:
        try:
            text, _ = await self.orch.transcribe(
                pcm_to_wav(pcm), "partial.wav", "audio/wav", self.language
            )
        except TurnError as exc:
            log.info("hands-free: a partial transcription failed: %s", exc.message)
            return
        if self.speech_from is not None and text:
            await self.send({"type": "partial_transcription", "text": text})

    # -- events from morgan-vad ---------------------------------------------------

    async def _read(self) -> None:
        while True:
            try:
                async for event in self.vad.events():
                    start = self.offset + float(event.get("start", 0.0))
                    if event.get("type") == "speech_start":
                        await self._speech_started(start)
                    elif event.get("type") == "speech_end":
                        await self._speech_ended(start, self.offset + float(event["end"]))
                why = "it closed the stream"
            except (TurnError, ConnectionClosed, OSError) as exc:
                why = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            if not await self._switch_vad(why):
                return

    async def _switch_vad(self, why: str) -> bool:
        """Go on with another morgan-vad instance, waiting up to SWITCH_SECONDS for one;
        False (and the client told) if none opened by then."""
        gone = self.vad
        log.warning("hands-free: lost morgan-vad %s (%s); opening another", gone.instance, why)
        deadline = time.monotonic() + SWITCH_SECONDS
        tries = 0
        while True:
            tries += 1
            try:
                vad = await _open_vad(self.orch, exclude=frozenset({gone.instance}))
                break
            except TurnError as exc:
                if time.monotonic() + SWITCH_RETRY_SECONDS > deadline:
                    log.warning(
                        "hands-free: no morgan-vad instance to go on with after %d tries in "
                        "%.0f s: %s",
                        tries,
                        SWITCH_SECONDS,
                        exc.message,
                    )
                    await self._lose(exc)
                    return False
                log.info("hands-free: try %d: no morgan-vad instance yet: %s", tries, exc.message)
                self.orch.models.http.discovery.invalidate(self.orch.settings.vad_service)
                await asyncio.sleep(SWITCH_RETRY_SECONDS)
        await gone.close()
        self._go_on(vad)
        return True

    async def _recover(self) -> None:
        """After a loss, while audio comes in: one try to open a stream; the session goes
        on with it if it opens."""
        try:
            vad = await _open_vad(self.orch)
        except TurnError as exc:
            log.info("hands-free: still no morgan-vad instance: %s", exc.message)
            return
        log.warning("hands-free: morgan-vad %s is back; the session goes on", vad.instance)
        await self.vad.close()
        self._go_on(vad)
        self.lost = None
        await self._read()

    def _go_on(self, vad: VADStream) -> None:
        self.vad, self.offset, self.speech_from = vad, self.samples / SAMPLE_RATE, None

    async def _lose(self, exc: TurnError) -> None:
        self.lost = StageUnavailableError(
            f"{exc.message}; the hands-free session has no voice detection: its audio is "
            f"dropped, and core tries again every {LOST_REPORT_SECONDS:.0f} s while audio "
            "comes in",
            headers={"Retry-After": f"{LOST_REPORT_SECONDS:.0f}"},
        )
        self.lost_reported = time.monotonic()
        await self._report(self.lost)

    async def _report(self, exc: TurnError) -> None:
        with contextlib.suppress(Exception):
            await self.send({"type": "error", "status": exc.status_code, "message": exc.message})

    async def _speech_started(self, start: float) -> None:
        self.speech_from = start
        self.partial_at = 0.0
        if self.turn is not None and not self.turn.done():
            # Barge-in: the answer stops now; the task stores the turn as interrupted.
            noticed = time.perf_counter()
            self.turn.cancel()
            await asyncio.sleep(0)  # the cancellation reaches the LLM stream and TTS calls
            reaction_ms = round(1e3 * (time.perf_counter() - noticed), 2)
            await self.send({"type": "interrupted", "reaction_ms": reaction_ms})
        await self.send({"type": "speech_started", "start": start})

    async def _speech_ended(self, start: float, end: float) -> None:
        pcm = self._slice(start, end)
        self.speech_from = None
        if self.partial is not None:
            self.partial.cancel()
        await self.send({"type": "speech_ended", "start": start, "end": end})
        if self.turn is not None and not self.turn.done():
            await asyncio.wait([self.turn])  # the interrupted turn is stored first
        self.turn = asyncio.create_task(self._voice_turn(pcm), name="hands-free-turn")

    # -- turns -----------------------------------------------------------------------

    async def _voice_turn(self, pcm: bytes) -> None:
        started = time.perf_counter()
        try:
            await self.count_turn()
            text, stt_ms = await self.orch.transcribe(
                pcm_to_wav(pcm), "utterance.wav", "audio/wav", self.language
            )
            await self.send({"type": "transcription", "text": text})
            if not text:
                raise InvalidInputError("no speech was recognised in the utterance")
            await self.run_turn(text, text, stt_ms, started)
        except TurnError as exc:
            await self._report(exc)

    async def text(self, text: str) -> None:
        """A typed turn in a hands-free session: it runs like a spoken one (and can be
        interrupted by speaking)."""
        if self.turn is not None and not self.turn.done():
            raise InvalidInputError("a turn is still being answered; wait for response_complete")

        async def typed() -> None:
            try:
                await self.run_turn(text, None, 0.0, time.perf_counter())
            except TurnError as exc:
                await self._report(exc)

        self.turn = asyncio.create_task(typed(), name="hands-free-text")

    async def close(self) -> None:
        tasks = [t for t in (self.turn, self.partial, self.reader) if t is not None]
        for task in tasks:
            task.cancel()
        await self.vad.close()
        await asyncio.gather(*tasks, return_exceptions=True)
