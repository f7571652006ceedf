"""Settings of morgan-stt (env MORGAN_STT_<FIELD>, Consul KV morgan/config/stt/<field>)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from morgan.models.directory import default_model_dir
from morgan.shared.settings import ServiceSettings, restart_field

_ENVELOPE_BYTES = 64 * 1024  # JSON or multipart framing around the payload


class STTSettings(ServiceSettings):
    """morgan-stt: speech to text with faster-whisper (CTranslate2 Whisper models)."""

    service_name: str = restart_field("morgan-stt", description="Name registered in Consul.")
    port: int = restart_field(
        8003, ge=1, le=65535, description="TCP port the HTTP server listens on."
    )
    engine: Literal["faster-whisper"] = restart_field(
        "faster-whisper", description="Speech-to-text engine (advertised in Consul meta)."
    )
    model_dir: Path = restart_field(
        default_factory=default_model_dir,
        description="Model directory (a volume); the model is read from `<model_dir>/stt/<model>`. "
        "Defaults to MORGAN_MODEL_DIR, else /models.",
    )
    model: str = restart_field(
        "default",
        description="Whisper model name under `<model_dir>/stt/` (CTranslate2 format, as "
        "faster-whisper uses), or an absolute path.",
        min_length=1,
    )
    compute_type: str = restart_field(
        "default",
        description="CTranslate2 compute type: `default`, `int8`, `int8_float16`, "
        "`float16`, `float32`.",
    )
    cpu_threads: int = restart_field(
        0, ge=0, description="CPU threads per transcription (0 = auto)."
    )
    beam_size: int = Field(1, ge=1, le=10, description="Beam size (1 = greedy, fastest).")
    vad_filter: bool = Field(
        False, description="Drop non-speech with Silero VAD unless a request says otherwise."
    )
    max_audio_seconds: float = Field(300.0, gt=0, description="Longest audio accepted (→ 413).")
    max_upload_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, description="Largest upload accepted (→ 413)."
    )
    max_concurrency: int = Field(1, ge=1, description="Transcriptions running at the same time.")
    max_queue: int = Field(
        8, ge=0, description="Requests waiting for a slot; when full, new ones get 503."
    )
    idle_unload_seconds: float = Field(
        0.0, ge=0, description="Unload the model after this long without requests (0 = never)."
    )
    partial_interval_seconds: float = Field(
        1.0, gt=0, description="WebSocket streaming: a partial result after this much new audio."
    )

    def max_request_bytes(self) -> int:
        """Largest request body read: an upload of max_upload_bytes, as base64 in
        /transcribe (4/3 of it) or multipart."""
        return self.max_upload_bytes * 4 // 3 + _ENVELOPE_BYTES
