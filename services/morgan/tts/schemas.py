"""Request bodies of morgan-tts (OpenAI-compatible speech)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str = Field(..., description="Text to speak.")
    voice: str = Field(..., description="Voice id from GET /voices (or a configured alias).")
    model: str | None = Field(
        None, description="Accepted for OpenAI clients; the voice chooses the model."
    )
    response_format: str = Field("wav", description="`wav` or `pcm` (16-bit mono).")
    speed: float = Field(1.0, description="Only 1.0 is supported.")
