"""Whole-file analysis under the service's limits; the model runs in a worker thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from morgan.models import metrics
from morgan.models.holder import ModelHolder
from morgan.models.slots import MeteredLimiter
from morgan.shared.settings import settings_source
from morgan.vad.config import VADSettings
from morgan.vad.detector import DetectorConfig, SpeechDetector, SpeechEvent
from morgan.vad.engine import WINDOW, SileroModel, SileroStream


def detector_config(settings: VADSettings, **overrides: Any) -> DetectorConfig:
    """The detector's settings now, with a request's own values where it gives them."""
    values: dict[str, Any] = {
        "threshold": settings.threshold,
        "min_speech_ms": settings.min_speech_ms,
        "min_silence_ms": settings.min_silence_ms,
        "speech_pad_ms": settings.speech_pad_ms,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return DetectorConfig(**values)


def run_windows(
    stream: SileroStream, detector: SpeechDetector, samples: np.ndarray
) -> list[SpeechEvent]:
    """Feed whole windows of `samples` (a multiple of WINDOW long) through the model."""
    events: list[SpeechEvent] = []
    for offset in range(0, len(samples) - WINDOW + 1, WINDOW):
        events += detector.feed(stream.probability(samples[offset : offset + WINDOW]))
    return events


@dataclass(frozen=True)
class Segment:
    start: float
    end: float


def analyse(model: SileroModel, samples: np.ndarray, config: DetectorConfig) -> list[Segment]:
    """Every speech segment of 16 kHz mono float32 `samples`."""
    padded = samples
    if len(samples) % WINDOW:
        padded = np.concatenate([samples, np.zeros(WINDOW - len(samples) % WINDOW, np.float32)])
    detector = SpeechDetector(config)
    events = run_windows(model.stream(), detector, padded) + detector.finish()
    duration = len(samples) / 16000
    return [
        Segment(e.start, min(e.end, duration))
        for e in events
        if e.kind == "end" and e.end is not None
    ]


class VADService:
    """Whole-file requests under the limits `settings` gives now (read on every request)."""

    def __init__(
        self,
        settings: VADSettings | Callable[[], VADSettings],
        holder: ModelHolder[SileroModel],
        limiter: MeteredLimiter,
    ) -> None:
        self._settings = settings_source(settings)
        self.holder = holder
        self.limiter = limiter

    @property
    def settings(self) -> VADSettings:
        return self._settings()

    async def segments(
        self, samples: np.ndarray, config: DetectorConfig
    ) -> tuple[list[Segment], float]:
        """The speech segments and the seconds the model took."""
        async with self.limiter.slot(), self.holder.use() as model:
            started = time.perf_counter()
            found = await asyncio.to_thread(analyse, model, samples, config)
            elapsed = time.perf_counter() - started
        duration = len(samples) / 16000
        name = self.settings.service_name
        metrics.observe_audio(name, self.holder.model, duration, elapsed)
        return found, elapsed
