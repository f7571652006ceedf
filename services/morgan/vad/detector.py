"""Speech start and end from per-window speech probabilities: a pure state machine.

Speech starts when the probability stays at or above `threshold` for `min_speech_ms`
(reported from where it first rose, less `speech_pad_ms`), and ends when it stays below
`threshold - 0.15` for `min_silence_ms` (reported where it first fell, plus the pad) —
the hysteresis and durations Silero VAD's own segmentation uses. The same machine serves
a whole file (`segments`) and a live stream (events as the windows arrive).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from morgan.vad.engine import SAMPLE_RATE, WINDOW

HYSTERESIS = 0.15


@dataclass(frozen=True)
class DetectorConfig:
    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 500
    speech_pad_ms: int = 30

    @property
    def off_threshold(self) -> float:
        return max(self.threshold - HYSTERESIS, 0.01)


@dataclass(frozen=True)
class SpeechEvent:
    """`start`: speech began at `start`. `end`: the speech from `start` ended at `end`.
    Times in seconds from the stream's first sample; `at` is when it was known."""

    kind: Literal["start", "end"]
    start: float
    end: float | None
    at: float

    def message(self) -> dict[str, object]:
        body: dict[str, object] = {"type": f"speech_{self.kind}", "start": round(self.start, 3)}
        if self.end is not None:
            body["end"] = round(self.end, 3)
        body["at"] = round(self.at, 3)
        return body


def _samples(ms: int) -> int:
    return ms * SAMPLE_RATE // 1000


class SpeechDetector:
    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.position = 0  # samples seen
        self._rise: int | None = None  # where speech (not yet confirmed) began
        self._speaking_from: int | None = None  # start of confirmed speech (unpadded)
        self._fall: int | None = None  # where silence inside speech began
        self._last_end = 0  # padded end of the previous segment: a start never precedes it

    @property
    def speaking(self) -> bool:
        return self._speaking_from is not None

    def feed(self, probability: float) -> list[SpeechEvent]:
        """Take the next window's probability; the events it settles."""
        c = self.config
        window_start = self.position
        self.position += WINDOW
        events: list[SpeechEvent] = []
        if self._speaking_from is None:
            if probability >= c.threshold:
                if self._rise is None:
                    self._rise = window_start
                if self.position - self._rise >= _samples(c.min_speech_ms):
                    self._speaking_from = self._rise
                    start = max(self._rise - _samples(c.speech_pad_ms), self._last_end)
                    events.append(self._event("start", start, None))
            elif probability < c.off_threshold:
                self._rise = None
            return events
        if probability >= c.threshold:
            self._fall = None
        elif probability < c.off_threshold:
            if self._fall is None:
                self._fall = window_start
            if self.position - self._fall >= _samples(c.min_silence_ms):
                events.append(self._end(self._fall))
        return events

    def finish(self) -> list[SpeechEvent]:
        """The stream ended: close speech still open at its last sample."""
        if self._speaking_from is None:
            return []
        return [self._end(self._fall if self._fall is not None else self.position, pad=False)]

    def _end(self, at_sample: int, *, pad: bool = True) -> SpeechEvent:
        assert self._speaking_from is not None
        end = min(at_sample + (_samples(self.config.speech_pad_ms) if pad else 0), self.position)
        start = max(self._speaking_from - _samples(self.config.speech_pad_ms), self._last_end)
        self._speaking_from = self._rise = self._fall = None
        self._last_end = end
        return self._event("end", start, end)

    def _event(self, kind: Literal["start", "end"], start: int, end: int | None) -> SpeechEvent:
        return SpeechEvent(
            kind,
            start=start / SAMPLE_RATE,
            end=None if end is None else end / SAMPLE_RATE,
            at=self.position / SAMPLE_RATE,
        )
