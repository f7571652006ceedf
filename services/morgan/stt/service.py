"""Transcription with limits and metrics; the model call runs in a worker thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from morgan.models import metrics
from morgan.models.errors import ModelRequestError
from morgan.models.holder import ModelHolder
from morgan.models.slots import MeteredLimiter
from morgan.shared.settings import settings_source
from morgan.stt.audio import DecodedAudio
from morgan.stt.config import STTSettings
from morgan.stt.engine import Transcription, WhisperEngine, whisper_languages

RESPONSE_FORMATS = ("json", "text", "verbose_json")


def check_language(language: str | None) -> str | None:
    """None (auto-detect) or a code Whisper knows; 'auto' and '' mean auto-detect."""
    if language is None or language.strip().lower() in ("", "auto"):
        return None
    code = language.strip().lower()
    if code not in whisper_languages():
        raise ModelRequestError(
            400,
            f"unknown language {language!r}: use an ISO 639-1 code Whisper knows "
            "(e.g. en, de, fr) or leave it out to detect it",
            code="unknown_language",
            param="language",
        )
    return code


def check_response_format(response_format: str) -> str:
    if response_format not in RESPONSE_FORMATS:
        raise ModelRequestError(
            400,
            f"response_format {response_format!r} is not supported: use one of "
            f"{', '.join(RESPONSE_FORMATS)}",
            param="response_format",
        )
    return response_format


class TranscriptionService:
    """Transcriptions under the limits `settings` gives now (read on every request)."""

    def __init__(
        self,
        settings: STTSettings | Callable[[], STTSettings],
        holder: ModelHolder[WhisperEngine],
        limiter: MeteredLimiter,
    ) -> None:
        self._settings = settings_source(settings)
        self.holder = holder
        self.limiter = limiter

    @property
    def settings(self) -> STTSettings:
        return self._settings()

    @property
    def model_id(self) -> str:
        return self.holder.model

    async def transcribe(
        self,
        audio: DecodedAudio,
        *,
        language: str | None = None,
        vad_filter: bool | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
    ) -> Transcription:
        s = self.settings
        vad = s.vad_filter if vad_filter is None else vad_filter
        async with self.limiter.slot(), self.holder.use() as engine:
            started = time.perf_counter()
            result = await asyncio.to_thread(
                engine.transcribe,
                audio.samples,
                language=language,
                vad_filter=vad,
                prompt=prompt,
                temperature=temperature,
                beam_size=s.beam_size,
            )
            elapsed = time.perf_counter() - started
        metrics.observe_audio(self.settings.service_name, self.model_id, audio.duration, elapsed)
        return result


def transcription_body(
    result: Transcription, response_format: str, processing_seconds: float | None = None
) -> dict[str, Any]:
    if response_format == "json":
        return {"text": result.text}
    body: dict[str, Any] = {
        "task": "transcribe",
        "text": result.text,
        "language": result.language,
        "language_probability": round(result.language_probability, 4),
        "duration": round(result.duration, 3),
        "segments": [
            {"id": i, "start": s.start, "end": s.end, "text": s.text}
            for i, s in enumerate(result.segments)
        ],
    }
    if processing_seconds is not None:
        body["processing_seconds"] = round(processing_seconds, 4)
    return body
