"""Prometheus metrics of the model services (llm, stt, tts), on the default registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MODEL_LOAD_SECONDS = Gauge(
    "morgan_model_load_seconds", "Time the last model load took.", ["service", "model"]
)
MODEL_LOADED = Gauge(
    "morgan_model_loaded",
    "1 while the model is in memory, 0 after an idle unload.",
    ["service", "model"],
)
QUEUE_DEPTH = Gauge("morgan_model_queue_depth", "Requests waiting for a model slot.", ["service"])
REQUESTS_RUNNING = Gauge(
    "morgan_model_requests_running", "Requests holding a model slot now.", ["service"]
)
REQUESTS_REJECTED_TOTAL = Counter(
    "morgan_model_requests_rejected_total",
    "Requests refused with 503 because all slots and the queue were full.",
    ["service"],
)
REQUESTS_ABANDONED_TOTAL = Counter(
    "morgan_model_requests_abandoned_total",
    "Requests dropped unrun from the queue because their client closed the connection.",
    ["service"],
)
LLM_TOKENS_TOTAL = Counter(
    "morgan_llm_tokens_total",
    "Tokens processed, by kind (prompt, completion).",
    ["model", "kind"],
)
LLM_TOKENS_PER_SECOND = Histogram(
    "morgan_llm_tokens_per_second",
    "Generation speed of one request (completion tokens/s).",
    ["model"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
LLM_LAST_TOKENS_PER_SECOND = Gauge(
    "morgan_llm_last_tokens_per_second",
    "Generation speed of the last finished request.",
    ["model"],
)
AUDIO_SECONDS_TOTAL = Counter(
    "morgan_audio_seconds_processed_total",
    "Seconds of audio transcribed (stt), synthesised (tts) or searched for speech (vad).",
    ["service", "model"],
)
REAL_TIME_FACTOR = Histogram(
    "morgan_audio_real_time_factor",
    "Processing time divided by audio duration for one request (below 1 = faster than real time).",
    ["service", "model"],
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)


def observe_audio(service: str, model: str, audio_seconds: float, took_seconds: float) -> None:
    """Count audio a request processed, and its real-time factor."""
    AUDIO_SECONDS_TOTAL.labels(service, model).inc(audio_seconds)
    if audio_seconds > 0:
        REAL_TIME_FACTOR.labels(service, model).observe(took_seconds / audio_seconds)
