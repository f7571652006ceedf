"""CoreSettings: everything core reads from env, Consul KV (`morgan/config/core/`), YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from morgan.shared.settings import ServiceSettings, restart_field

AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3")


class CoreSettings(ServiceSettings):
    service_name: str = restart_field("morgan-core", description="Consul name of core.")
    port: int = restart_field(8000, ge=1, le=65535, description="TCP port core listens on.")

    # -- the model services (Consul names, never URLs)
    llm_service: str = Field("morgan-llm", description="Consul name of the LLM service.")
    stt_service: str = Field("morgan-stt", description="Consul name of the STT service.")
    tts_service: str = Field("morgan-tts", description="Consul name of the TTS service.")
    vad_service: str = Field(
        "morgan-vad",
        description="Consul name of the voice activity service (hands-free turns on /ws/stream).",
    )
    llm_model: str = Field("default", description="`model` sent to /v1/chat/completions.")
    llm_max_tokens: int = Field(256, ge=1, le=8192, description="Reply length limit (tokens).")
    llm_temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    llm_min_tokens: int = Field(
        1, ge=0, le=64,
        description="Tokens before the LLM may end its reply (0: no floor); a sampled reply "
        "that ended at once would be an empty answer.",
    )  # fmt: skip
    system_prompt: str = Field(
        "You are Morgan, a helpful voice assistant. Answer briefly and clearly.",
        description="System message of every conversation.",
    )
    service_api_key: SecretStr = Field(
        SecretStr(""),
        description="API key core sends to the model services (their /v1 routes need one "
        "unless they run with auth_enabled=false); create it with `morgan keys create`.",
    )
    tts_voice: str = Field("default", description="`voice` sent to /v1/audio/speech.")
    stt_timeout_seconds: float = Field(30.0, gt=0, description="Limit of the STT stage.")
    llm_timeout_seconds: float = Field(60.0, gt=0, description="Limit of the LLM stage.")
    tts_timeout_seconds: float = Field(30.0, gt=0, description="Limit of the TTS stage.")
    vad_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="Connecting to morgan-vad for a hands-free session."
    )
    hands_free_partial_seconds: float = Field(
        1.0,
        ge=0,
        le=30,
        description="Hands-free: a partial transcription after each this much more speech "
        "(0: none; each costs an STT run).",
    )

    # -- load
    max_inflight: int = Field(
        50, ge=1, description="Turns served at once; beyond this a turn gets 503 + Retry-After."
    )
    retry_after_seconds: int = Field(1, ge=1, description="Retry-After sent with that 503.")
    rate_limit_per_minute: int = Field(
        100,
        ge=0,
        description="Requests under /api/ plus WebSocket turns one client IP may send per"
        " minute, shared by every core (past it: 429 + Retry-After; 0 = no limit).",
    )
    audio_rate_limit_per_minute: int = Field(
        10, ge=0, description="Audio turns (HTTP or WebSocket) per client IP per minute."
    )
    ws_idle_timeout_seconds: float = Field(
        120.0, gt=0, le=3600,
        description="A WebSocket session that sends nothing (not even a ping) for this long "
        "is closed (code 1001).",
    )  # fmt: skip
    ws_max_bytes_per_minute: int = Field(
        64 * 1024 * 1024, ge=1024,
        description="Bytes one WebSocket session may send per minute; past it the session "
        "gets a 429 error and is closed (code 1008).",
    )  # fmt: skip
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12",
                                 "192.168.0.0/16", "fc00::/7"],
        description="Peers (addresses or networks) whose X-Forwarded-For names the client:"
        " the gateway. Internal TLS keeps anyone else from reaching core at all.",
    )  # fmt: skip

    # -- input limits
    max_text_chars: int = Field(10_000, ge=1, description="Longest text a turn may carry.")
    max_text_body_bytes: int = Field(
        256 * 1024, ge=1024, description="Largest JSON body of /api/text (bigger: 413)."
    )
    max_audio_bytes: int = Field(25 * 1024 * 1024, ge=1024, description="Largest upload (413).")
    max_audio_seconds: float = Field(300.0, gt=0, description="Longest upload in seconds (413).")

    # -- PostgreSQL (an address of infrastructure, not of a Morgan service)
    postgres_dsn: SecretStr = restart_field(
        SecretStr(""),
        description="postgresql://user@host:port/db; put it in the environment "
        "(MORGAN_CORE_POSTGRES_DSN). Its password goes in postgres_password (or in the URL).",
    )
    postgres_password: SecretStr = restart_field(
        SecretStr(""),
        description="The password for postgres_dsn; from a file: "
        "MORGAN_CORE_POSTGRES_PASSWORD_FILE.",
    )
    postgres_pool_min: int = restart_field(
        5, ge=1, description="asyncpg pool: connections kept open."
    )
    postgres_pool_max: int = restart_field(20, ge=1, description="asyncpg pool: most connections.")
    postgres_max_attempts: int = restart_field(
        5, ge=1, le=10, description="Tries of a statement after a lost connection."
    )

    # -- Redis
    redis_cluster_nodes: list[str] = restart_field(
        default_factory=list, description="Redis Cluster startup nodes, `host:port` each."
    )
    redis_url: SecretStr = restart_field(
        SecretStr(""), description="A standalone Redis (redis://...), used when no cluster nodes."
    )
    redis_password: SecretStr = restart_field(
        SecretStr(""),
        description="Redis's password (the cluster's, or added to redis_url); from a file: "
        "MORGAN_CORE_REDIS_PASSWORD_FILE.",
    )
    redis_tls: bool = restart_field(
        False,
        description="Speak TLS to the Redis Cluster nodes, with tls_ca, tls_cert and tls_key.",
    )
    cache_ttl_seconds: int = Field(3600, ge=1, description="TTL of a cached context.")
    cache_warm_count: int = restart_field(
        100, ge=0, description="Most recently active conversations loaded into Redis on start."
    )
    cache_refresh_seconds: float = Field(
        300.0, ge=0, description="Period of the hot-entry refresh (0 switches it off)."
    )
    cache_refresh_count: int = Field(50, ge=0, description="Hot entries refreshed per period.")

    # -- conversation and memory
    context_turns: int = Field(10, ge=0, le=200, description="Recent turns given to the LLM.")
    memory_enabled: bool = restart_field(True, description="Store and search semantic memory.")
    memory_store: Literal["qdrant", "postgres"] = restart_field(
        "qdrant",
        description="Where memories live: Qdrant (qdrant_url or qdrant_path), or a table in"
        " the PostgreSQL of postgres_dsn (one store for every core, replicated with it).",
    )
    memory_top_k: int = Field(3, ge=0, le=50, description="Memories given to the LLM.")
    memory_min_score: float = Field(0.3, ge=-1, le=1, description="Weakest memory used.")
    qdrant_url: str = restart_field("", description="Qdrant server; empty: embedded local mode.")
    qdrant_api_key: SecretStr = restart_field(SecretStr(""), description="Qdrant server API key.")
    qdrant_path: Path = restart_field(
        Path("data/qdrant"), description="Directory of embedded Qdrant (local mode)."
    )
    memory_collection: str = restart_field("morgan_memory", min_length=1, description="Collection.")
    memory_threads: int = restart_field(
        0, ge=0, description="CPU threads for embeddings (0: all cores but one)."
    )
    memory_model_path: Path | None = restart_field(
        None,
        description="Embedding model: an ONNX embedder directory (model.onnx, tokenizer.json,"
        " embedder.json) or a sentence-transformers model directory (exported to ONNX once);"
        " empty: the bundled MiniLM.",
    )

    @model_validator(mode="after")
    def _pool_bounds(self) -> CoreSettings:
        if self.postgres_pool_min > self.postgres_pool_max:
            raise ValueError(
                f"postgres_pool_min ({self.postgres_pool_min}) is larger than "
                f"postgres_pool_max ({self.postgres_pool_max}); lower the first or raise the second"
            )
        return self
