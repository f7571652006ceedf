"""The stream WebSocket: 16 kHz PCM arrives in frames; speech start and end come back live.

Protocol (JSON text frames; audio as binary frames of 16-bit little-endian mono PCM):
  -> {"type": "start", "sample_rate": 16000, "threshold": 0.5, "min_silence_ms": 500}
     (optional: audio alone starts with the service's settings; the three detector
     values — threshold, min_speech_ms, min_silence_ms — may each be left out)
  -> binary PCM frames of any length, at most max_frame_bytes each
  <- {"type": "speech_start", "start": 1.25, "at": 1.5}
  <- {"type": "speech_end", "start": 1.25, "end": 3.1, "at": 3.6}
  -> {"type": "stop"}
  <- any speech_end still open, then {"type": "stopped", "duration": 4.0}
  -> {"type": "ping"}  <- {"type": "pong"}
  <- {"type": "error", "message": ..., "code": ...} for anything refused
Times are seconds from the stream's first sample; `at` is how much audio had arrived
when the event was known. A "start" after "stopped" begins a new stream.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from morgan.models.errors import ModelRequestError
from morgan.models.stream_socket import Send, control_message
from morgan.vad.detector import SpeechDetector
from morgan.vad.engine import SAMPLE_RATE, WINDOW, SileroStream
from morgan.vad.service import VADService, detector_config, run_windows

_WINDOW_BYTES = WINDOW * 2
DETECTOR_FIELDS = ("threshold", "min_speech_ms", "min_silence_ms")


def _detector_overrides(message: dict[str, Any]) -> dict[str, Any]:
    """The detector values a start message gives, checked against the settings' bounds."""
    from morgan.vad.config import VADSettings

    given = {k: message[k] for k in DETECTOR_FIELDS if message.get(k) is not None}
    for name, value in given.items():
        field = VADSettings.model_fields[name]
        bounds = {type(m).__name__: m for m in field.metadata}
        low = getattr(bounds.get("Ge"), "ge", None)
        high = getattr(bounds.get("Le"), "le", None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ModelRequestError(400, f"{name} must be a number", param=name)
        if (low is not None and value < low) or (high is not None and value > high):
            raise ModelRequestError(
                400, f"{name} {value} is outside {low}..{high}", code="out_of_range", param=name
            )
    return given


class StreamSession:
    def __init__(self, service: VADService) -> None:
        self.service = service
        self.pending = bytearray()
        self.detector: SpeechDetector | None = None
        self.stream: SileroStream | None = None

    async def control(self, text: str) -> list[dict[str, Any]]:
        message = control_message(text, '"start"|"stop"|"ping"')
        kind = message.get("type")
        if kind == "start":
            rate = message.get("sample_rate", SAMPLE_RATE)
            if rate != SAMPLE_RATE:
                raise ModelRequestError(
                    400,
                    f"sample_rate {rate!r} is not taken: stream 16-bit mono PCM at 16000 Hz",
                    code="unsupported_sample_rate",
                    param="sample_rate",
                )
            await self._begin(_detector_overrides(message))
            return [{"type": "started", "sample_rate": SAMPLE_RATE}]
        if kind == "stop":
            return await self._stop()
        if kind == "ping":
            return [{"type": "pong"}]
        raise ModelRequestError(
            400, f"unknown message type {kind!r}: use start, stop or ping", param="type"
        )

    async def audio(self, data: bytes) -> list[dict[str, Any]]:
        limit = self.service.settings.max_frame_bytes
        if len(data) > limit:
            raise ModelRequestError(
                413,
                f"audio frame of {len(data)} bytes is over the limit of {limit}; send frames "
                "of 20-100 ms",
                code="frame_too_large",
            )
        if self.detector is None:
            await self._begin({})
        self.pending += data
        usable = len(self.pending) - len(self.pending) % _WINDOW_BYTES
        if not usable:
            return []
        chunk = bytes(self.pending[:usable])
        del self.pending[:usable]
        samples = np.frombuffer(chunk, dtype="<i2").astype(np.float32) / 32768.0
        assert self.stream is not None and self.detector is not None
        events = await asyncio.to_thread(run_windows, self.stream, self.detector, samples)
        return [e.message() for e in events]

    def after_message(self, send: Send) -> None:
        """Nothing runs in the background: events go out as the audio is analysed."""

    async def close(self) -> None:
        self.detector = self.stream = None

    async def _begin(self, overrides: dict[str, Any]) -> None:
        config = detector_config(self.service.settings, **overrides)
        async with self.service.holder.use() as model:
            self.stream = model.stream()
        self.detector = SpeechDetector(config)
        self.pending.clear()

    async def _stop(self) -> list[dict[str, Any]]:
        if self.detector is None:
            return [{"type": "stopped", "duration": 0.0}]
        events = [e.message() for e in self.detector.finish()]
        duration = (self.detector.position + len(self.pending) // 2) / SAMPLE_RATE
        self.detector = self.stream = None
        self.pending.clear()
        return [*events, {"type": "stopped", "duration": round(duration, 3)}]
