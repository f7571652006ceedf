"""WebSocket streaming: PCM arrives in pieces; partial results while it does, a final at stop.

Protocol (JSON text frames, audio as binary frames of 16-bit little-endian mono PCM):
  -> {"type": "start", "sample_rate": 16000, "language": null, "vad_filter": false}
  -> binary PCM frames, or {"type": "audio", "data": "<base64 PCM>"}
  <- {"type": "partial", "text": ..., "duration": ...}   (every partial_interval_seconds)
  -> {"type": "stop"}
  <- {"type": "final", "text": ..., "language": ..., "duration": ..., "segments": [...]}
  <- {"type": "error", "message": ..., "code": ...} for anything refused
A new "start" (or more audio) after a final begins the next utterance.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from typing import Any

from morgan.models.errors import ModelRequestError, ServiceBusy
from morgan.models.stream_socket import Send, control_message
from morgan.stt.audio import check_pcm_rate, decode_pcm
from morgan.stt.service import TranscriptionService, check_language, transcription_body

log = logging.getLogger(__name__)


class StreamingSession:
    def __init__(self, service: TranscriptionService) -> None:
        self.service = service
        self.sample_rate = 16000
        self.language: str | None = None
        self.vad_filter: bool | None = None
        self.buffer = bytearray()
        self.partial_at = 0
        self.partial_task: asyncio.Task[None] | None = None

    @property
    def max_bytes(self) -> int:
        return int(self.service.settings.max_audio_seconds * self.sample_rate) * 2

    async def control(self, text: str) -> list[dict[str, Any]]:
        message = control_message(text, '"start"|"audio"|"stop"|"ping"')
        kind = message.get("type")
        if kind == "start":
            await self._reset()
            self.sample_rate = check_pcm_rate(message.get("sample_rate", 16000))
            self.language = check_language(message.get("language"))
            vad = message.get("vad_filter")
            self.vad_filter = vad if isinstance(vad, bool) else None
            return [{"type": "started", "sample_rate": self.sample_rate, "language": self.language}]
        if kind == "audio":
            data = message.get("data")
            if not isinstance(data, str):
                raise ModelRequestError(400, "audio message needs data: base64 of PCM bytes")
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ModelRequestError(400, f"audio data is not valid base64 ({exc})") from exc
            return await self.audio(raw)
        if kind in ("stop", "end"):
            return [await self.final()]
        if kind == "ping":
            return [{"type": "pong"}]
        raise ModelRequestError(
            400, f"unknown message type {kind!r}: use start, audio, stop or ping"
        )

    async def audio(self, data: bytes) -> list[dict[str, Any]]:
        if len(self.buffer) + len(data) > self.max_bytes:
            raise ModelRequestError(
                413,
                f"stream is over the limit of {self.service.settings.max_audio_seconds:g} "
                "s of audio; send stop and start a new utterance",
                code="audio_too_long",
            )
        self.buffer.extend(data)
        return []

    def after_message(self, send: Send) -> None:
        """A partial result once partial_interval_seconds more audio has arrived."""
        interval = int(self.service.settings.partial_interval_seconds * self.sample_rate) * 2
        due = len(self.buffer) - self.partial_at >= interval
        if due and (self.partial_task is None or self.partial_task.done()):
            self.partial_at = len(self.buffer)
            snapshot = bytes(self.buffer[: len(self.buffer) // 2 * 2])
            self.partial_task = asyncio.create_task(self._partial(snapshot, send))

    async def _partial(self, pcm: bytes, send: Send) -> None:
        try:
            audio = decode_pcm(
                pcm,
                sample_rate=self.sample_rate,
                max_seconds=self.service.settings.max_audio_seconds,
            )
            result = await self.service.transcribe(
                audio, language=self.language, vad_filter=self.vad_filter
            )
            await send(
                {"type": "partial", "text": result.text, "duration": round(result.duration, 3)}
            )
        except ServiceBusy:
            log.debug("partial skipped: service busy")
        except Exception as exc:
            log.warning("partial transcription failed: %s", exc)

    async def final(self) -> dict[str, Any]:
        if self.partial_task is not None:
            with contextlib.suppress(Exception):
                await self.partial_task
        pcm = bytes(self.buffer)
        await self._reset()
        audio = decode_pcm(
            pcm, sample_rate=self.sample_rate, max_seconds=self.service.settings.max_audio_seconds
        )
        result = await self.service.transcribe(
            audio, language=self.language, vad_filter=self.vad_filter
        )
        return {"type": "final", **transcription_body(result, "verbose_json")}

    async def _reset(self) -> None:
        if self.partial_task is not None and not self.partial_task.done():
            with contextlib.suppress(Exception):
                await self.partial_task
        self.partial_task = None
        self.buffer = bytearray()
        self.partial_at = 0

    async def close(self) -> None:
        if self.partial_task is not None and not self.partial_task.done():
            self.partial_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.partial_task
