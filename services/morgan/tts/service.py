"""Speech synthesis: checks, voice choice, sentence-by-sentence synthesis with metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from morgan.models import metrics
from morgan.models.errors import ModelRequestError
from morgan.models.holder import ModelHolder
from morgan.models.slots import MeteredLimiter
from morgan.shared.settings import settings_source
from morgan.tts.audio import pcm16, wav_header
from morgan.tts.config import TTSSettings
from morgan.tts.engine import CoquiEngine, VoiceInfo
from morgan.tts.schemas import SpeechRequest
from morgan.tts.text import has_speakable_text, split_sentences

FORMATS = {"wav": "audio/wav", "pcm": "audio/pcm"}


class SpeechService:
    """Speech under the voices' names and limits `settings` gives now (read on every
    request)."""

    def __init__(
        self,
        settings: TTSSettings | Callable[[], TTSSettings],
        engine: CoquiEngine,
        holder: ModelHolder[CoquiEngine],
        limiter: MeteredLimiter,
    ) -> None:
        self._settings = settings_source(settings)
        self.engine = engine
        self.holder = holder
        self.limiter = limiter

    @property
    def settings(self) -> TTSSettings:
        return self._settings()

    def voices(self) -> list[VoiceInfo]:
        return list(self.engine.info.values())

    def resolve_voice(self, name: str) -> VoiceInfo:
        info = self.engine.info
        s = self.settings
        voice = s.voice_aliases.get(name, name)
        if voice not in info and s.default_voice in info:
            voice = s.default_voice
        if voice not in info:
            raise ModelRequestError(
                400,
                f"unknown voice {name!r}: use one of {', '.join(sorted(info))} "
                "(GET /voices lists them)",
                code="unknown_voice",
                param="voice",
            )
        return info[voice]

    def check(self, request: SpeechRequest) -> tuple[VoiceInfo, list[str], str]:
        text = request.input
        if not text.strip():
            raise ModelRequestError(
                400, "input is empty: send the text to speak", code="empty_input", param="input"
            )
        if len(text) > self.settings.max_input_chars:
            raise ModelRequestError(
                413,
                f"input is {len(text)} characters, over the limit of "
                f"{self.settings.max_input_chars}; split it into several requests",
                code="input_too_long",
                param="input",
            )
        if not has_speakable_text(text):
            raise ModelRequestError(
                400, "input has no letters or digits to speak", code="empty_input", param="input"
            )
        fmt = request.response_format
        if fmt not in FORMATS:
            raise ModelRequestError(
                400,
                f"response_format {fmt!r} is not supported: use wav or pcm",
                code="unsupported_response_format",
                param="response_format",
            )
        if request.speed != 1.0:
            raise ModelRequestError(
                400,
                f"speed {request.speed:g} is not supported: send 1.0 or leave it out",
                param="speed",
            )
        voice = self.resolve_voice(request.voice)
        return voice, split_sentences(text, self.settings.max_sentence_chars), fmt

    async def open_stream(
        self, request: SpeechRequest
    ) -> tuple[VoiceInfo, str, AsyncIterator[bytes]]:
        """Check and take a slot now (errors stay plain 4xx/503), then stream the audio."""
        voice, sentences, fmt = self.check(request)
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(self.limiter.slot())
            engine = await stack.enter_async_context(self.holder.use())
        except BaseException:
            await stack.aclose()
            raise
        return voice, fmt, self._stream(stack, engine, voice, sentences, fmt)

    async def _stream(
        self,
        stack: contextlib.AsyncExitStack,
        engine: CoquiEngine,
        voice: VoiceInfo,
        sentences: list[str],
        fmt: str,
    ) -> AsyncIterator[bytes]:
        async with stack:
            if fmt == "wav":
                yield wav_header(voice.sample_rate)
            for sentence in sentences:
                started = time.perf_counter()
                samples = await asyncio.to_thread(engine.synthesize, voice.id, sentence)
                elapsed = time.perf_counter() - started
                seconds = samples.shape[0] / voice.sample_rate
                metrics.observe_audio(self.settings.service_name, voice.id, seconds, elapsed)
                if samples.shape[0]:
                    yield pcm16(samples)
