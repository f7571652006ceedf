"""core's own Prometheus metrics (next to the shared HTTP ones)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

STAGE_SECONDS = Histogram(
    "morgan_core_stage_seconds",
    "Time spent in each stage of a turn (stt, context, memory, llm, persist, tts, total).",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TURNS_TOTAL = Counter(
    "morgan_core_turns_total",
    "Turns answered, by source (text, audio, stream) and whether speech was produced.",
    ["source", "audio"],
)
TURNS_REJECTED_TOTAL = Counter(
    "morgan_core_turns_rejected_total",
    "Turns refused with 503 because max_inflight turns were already running.",
)
CONVERSATIONS_STARTED_TOTAL = Counter(
    "morgan_core_conversations_started_total",
    "Conversations started by a turn that named none (a turn sent again with its"
    " Idempotency-Key does not count again).",
)
RATE_LIMITED_TOTAL = Counter(
    "morgan_core_rate_limited_total",
    "Requests and WebSocket turns refused with 429, by budget (api, audio).",
    ["bucket"],
)
CACHE_REQUESTS_TOTAL = Counter(
    "morgan_core_cache_requests_total",
    "Context cache lookups by result (hit, miss, error).",
    ["result"],
)


def observe_turn(source: str, timings: dict[str, float], audio: bool) -> None:
    for key, ms in timings.items():
        if key.endswith("_ms") and key != "first_token_ms":
            STAGE_SECONDS.labels(key.removesuffix("_ms")).observe(ms / 1000)
    TURNS_TOTAL.labels(source, "yes" if audio else "no").inc()
