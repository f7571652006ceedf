"""Settings of morgan-tts (env MORGAN_TTS_<FIELD>, Consul KV morgan/config/tts/<field>)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from morgan.models.directory import default_model_dir
from morgan.shared.settings import ServiceSettings, restart_field

_ENVELOPE_BYTES = 64 * 1024  # JSON or multipart framing around the payload


class TTSSettings(ServiceSettings):
    """morgan-tts: text to speech with Coqui TTS; each voice is one model directory."""

    service_name: str = restart_field("morgan-tts", description="Name registered in Consul.")
    port: int = restart_field(
        8002, ge=1, le=65535, description="TCP port the HTTP server listens on."
    )
    engine: Literal["coqui"] = restart_field(
        "coqui", description="Text-to-speech engine (advertised in Consul meta)."
    )
    model_dir: Path = restart_field(
        default_factory=default_model_dir,
        description="Model directory (a volume); each voice is a Coqui model in "
        "`<model_dir>/tts/<voice>/` (config.json and model.pth). Defaults to MORGAN_MODEL_DIR, "
        "else /models.",
    )
    voices: list[str] = restart_field(
        default_factory=list,
        description="Voices to load (directory names under `<model_dir>/tts/`); empty = all "
        "installed.",
    )
    default_voice: str = Field(
        "",
        description="Voice used for OpenAI voice names not otherwise mapped; empty = none "
        "(unknown voices get 400).",
    )
    voice_aliases: dict[str, str] = Field(
        default_factory=dict,
        description='Extra names for voices, e.g. {"alloy": "lessac"} for OpenAI clients.',
    )
    max_input_chars: int = Field(
        4096, ge=1, description="Longest text one request may send (→ 413)."
    )
    max_sentence_chars: int = Field(
        400,
        ge=20,
        description="Longer sentences are split at commas or spaces before "
        "synthesis (each piece is one streamed chunk).",
    )
    max_concurrency: int = Field(1, ge=1, description="Syntheses running at the same time.")
    max_queue: int = Field(
        8, ge=0, description="Requests waiting for a slot; when full, new ones get 503."
    )
    idle_unload_seconds: float = Field(
        0.0, ge=0, description="Unload the voices after this long without requests (0 = never)."
    )

    def max_request_bytes(self) -> int:
        """Largest request body read: text of max_input_chars characters (at most 4 bytes
        each in UTF-8) and the other fields."""
        return 4 * self.max_input_chars + _ENVELOPE_BYTES
