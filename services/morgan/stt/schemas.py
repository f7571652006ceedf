"""Request bodies of morgan-stt's JSON endpoint."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TranscribeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audio: str = Field(..., description="Base64 of the audio file (or of raw PCM with format=pcm).")
    format: Literal["auto", "pcm"] = Field(
        "auto",
        description="`auto`: a WAV, FLAC, Ogg or MP3 file; `pcm`: raw 16-bit "
        "little-endian mono samples at sample_rate.",
    )
    sample_rate: int | None = Field(None, description="Sample rate of pcm audio (Hz).")
    language: str | None = Field(None, description="ISO 639-1 code; leave out to detect.")
    vad_filter: bool | None = Field(None, description="Drop non-speech first (Silero VAD).")
    prompt: str | None = Field(None, max_length=2000)
