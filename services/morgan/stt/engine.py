"""faster-whisper behind a small interface; every call is blocking (run it in a thread)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    language_probability: float
    duration: float
    segments: list[Segment] = field(default_factory=list)


def whisper_languages() -> tuple[str, ...]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


class WhisperEngine:
    engine_name = "faster-whisper"

    def __init__(
        self,
        model_path: Path,
        *,
        device: str = "cpu",
        compute_type: str = "default",
        cpu_threads: int = 0,
        beam_size: int = 1,
    ) -> None:
        self.model_path = model_path
        # CTranslate2 runs on CPU or CUDA; Apple silicon uses its CPU path.
        self.device = "cuda" if device == "cuda" else "cpu"
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self._model: Any = None

    def load(self) -> WhisperEngine:
        from faster_whisper import WhisperModel

        self._model = WhisperModel(
            str(self.model_path),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.cpu_threads,
            local_files_only=True,
        )
        return self

    def unload(self) -> None:
        self._model = None

    def transcribe(
        self,
        samples: np.ndarray,
        *,
        language: str | None = None,
        vad_filter: bool = False,
        prompt: str | None = None,
        temperature: float = 0.0,
        beam_size: int | None = None,
    ) -> Transcription:
        """`beam_size` None: the one given at construction."""
        if self._model is None:
            raise RuntimeError("model is not loaded")
        segments, info = self._model.transcribe(
            samples,
            language=language,
            vad_filter=vad_filter,
            beam_size=self.beam_size if beam_size is None else beam_size,
            initial_prompt=prompt or None,
            temperature=temperature,
            condition_on_previous_text=False,
        )
        duration = float(info.duration)
        # Timestamps never run past the audio (an unsure model can place them later).
        items = [
            Segment(round(min(s.start, duration), 3), round(min(s.end, duration), 3), s.text)
            for s in segments
        ]
        return Transcription(
            text="".join(s.text for s in items).strip(),
            language=info.language,
            language_probability=float(info.language_probability),
            duration=duration,
            segments=items,
        )
