"""Settings of morgan-vad (env MORGAN_VAD_<FIELD>, Consul KV morgan/config/vad/<field>)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from morgan.shared.settings import ServiceSettings, restart_field

_ENVELOPE_BYTES = 64 * 1024  # multipart framing around the file


class VADSettings(ServiceSettings):
    """morgan-vad: where speech starts and ends, with Silero VAD on ONNX Runtime (CPU)."""

    service_name: str = restart_field("morgan-vad", description="Name registered in Consul.")
    port: int = restart_field(
        8004, ge=1, le=65535, description="TCP port the HTTP server listens on."
    )
    engine: Literal["silero"] = restart_field(
        "silero", description="Voice activity engine (advertised in Consul meta)."
    )
    cpu_threads: int = restart_field(
        1, ge=1, le=16, description="ONNX Runtime threads per model run (Silero is built for 1)."
    )
    threshold: float = Field(
        0.5,
        ge=0.05,
        le=0.95,
        description="Speech probability at or above which a 32 ms window is speech; speech "
        "ends when the probability falls below this minus 0.15.",
    )
    min_speech_ms: int = Field(
        250,
        ge=0,
        le=5000,
        description="Speech shorter than this is ignored (a click, a cough): a start is "
        "reported once speech has lasted this long.",
    )
    min_silence_ms: int = Field(
        500,
        ge=32,
        le=10_000,
        description="Silence that ends an utterance: the end is reported once the silence "
        "has lasted this long (the pause a person leaves when they have finished).",
    )
    speech_pad_ms: int = Field(
        30, ge=0, le=1000, description="Added before each start and after each end."
    )
    max_audio_seconds: float = Field(
        300.0, gt=0, description="Longest file accepted by /v1/vad (→ 413)."
    )
    max_upload_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, description="Largest file accepted by /v1/vad (→ 413)."
    )
    max_frame_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest binary frame on the stream WebSocket (2 s of 16 kHz PCM by "
        "default); a larger one closes the stream with 1009.",
    )
    max_concurrency: int = Field(2, ge=1, description="Files analysed at the same time.")
    max_queue: int = Field(
        16, ge=0, description="Files waiting for a slot; when full, new ones get 503."
    )
    idle_unload_seconds: float = Field(
        0.0, ge=0, description="Unload the model after this long without requests (0 = never)."
    )

    @model_validator(mode="after")
    def _cpu_only(self) -> VADSettings:
        if self.device != "cpu":
            raise ValueError(
                f"morgan-vad runs on the CPU only (device {self.device!r}); set device to cpu"
            )
        return self

    def max_request_bytes(self) -> int:
        """Largest request body read: an upload of max_upload_bytes in multipart."""
        return self.max_upload_bytes + _ENVELOPE_BYTES
