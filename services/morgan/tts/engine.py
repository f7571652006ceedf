"""Coqui TTS voices: one Synthesizer per voice directory; calls are blocking (use a thread)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoiceInfo:
    id: str
    path: Path
    sample_rate: int
    language: str


def read_voice_info(voice_id: str, path: Path) -> VoiceInfo:
    config = json.loads((path / "config.json").read_text())
    audio = config.get("audio", {})
    rate = int(audio.get("output_sample_rate") or audio.get("sample_rate") or 22050)
    language = str(config.get("phoneme_language") or config.get("language") or "")
    return VoiceInfo(voice_id, path, rate, language)


def checkpoint_of(path: Path) -> Path:
    for name in ("model.pth", "model_file.pth", "best_model.pth", "checkpoint.pth"):
        if (path / name).exists():
            return path / name
    candidates = sorted(path.glob("*.pth")) + sorted(path.glob("*.pt"))
    if not candidates:
        raise FileNotFoundError(f"no checkpoint (*.pth) in {path}")
    return candidates[0]


class CoquiEngine:
    engine_name = "coqui"

    def __init__(self, voices: dict[str, Path], *, device: str = "cpu") -> None:
        self.voice_paths = voices
        self.device = "cuda" if device == "cuda" else "cpu"
        self.info = {voice: read_voice_info(voice, path) for voice, path in voices.items()}
        self._synthesizers: dict[str, Any] = {}

    def load(self) -> CoquiEngine:
        from TTS.utils.synthesizer import Synthesizer

        loaded: dict[str, Any] = {}
        for voice, path in self.voice_paths.items():
            loaded[voice] = Synthesizer(
                tts_checkpoint=checkpoint_of(path),
                tts_config_path=path / "config.json",
                use_cuda=self.device == "cuda",
            )
            rate = int(loaded[voice].output_sample_rate)
            if rate != self.info[voice].sample_rate:
                self.info[voice] = VoiceInfo(voice, path, rate, self.info[voice].language)
        self._synthesizers = loaded
        return self

    def unload(self) -> None:
        self._synthesizers = {}

    def synthesize(self, voice: str, text: str) -> np.ndarray:
        synthesizer = self._synthesizers.get(voice)
        if synthesizer is None:
            raise RuntimeError(f"voice {voice!r} is not loaded")
        if not self.can_say(synthesizer, text):
            log.info("tts: voice %s has nothing to say for %r; skipped", voice, text[:60])
            return np.zeros(0, dtype=np.float32)
        wav = synthesizer.tts(text, split_sentences=False)
        return np.asarray(wav, dtype=np.float32)

    @staticmethod
    def can_say(synthesizer: Any, text: str) -> bool:
        """Whether the voice's tokenizer keeps anything of `text`: one that drops every
        character (a lone dash, a digit of a script the voice has no phonemes for) leaves
        at most the blank token, on which VITS fails."""
        tokenizer = getattr(synthesizer.tts_model, "tokenizer", None)
        return tokenizer is None or len(tokenizer.text_to_ids(text)) >= 2
