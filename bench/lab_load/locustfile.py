"""People talking to Morgan through the lab's gateway, for locust (run by bench/load_lab.py).

Each user keeps one conversation going: mostly text turns, now and then a spoken one
(the recording in MORGAN_LOAD_WAV), each with its own Idempotency-Key, with 5-10 s
between turns (MORGAN_LOAD_THINK=0: none, the closed loop). Besides locust's own entry
per endpoint, every answered turn adds one entry per stage, from the timings core
returns: stt, llm, tts, storage (context + persist), memory, and core's own overhead
(core's total minus the model stages).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from locust import HttpUser, between, constant, events, task

WAV = Path(os.environ["MORGAN_LOAD_WAV"]).read_bytes()
API_KEY = os.environ["MORGAN_LOAD_API_KEY"]
CA_FILE = os.environ["MORGAN_LOAD_CA"]
THINK = float(os.environ.get("MORGAN_LOAD_THINK", "1"))
PHRASES = ["What is on my calendar today?", "Tell me something about the moon.",
           "Remind me what we talked about.", "How long does it take to boil an egg?"]  # fmt: skip


def stages(timings: dict[str, float]) -> dict[str, float]:
    models = sum(timings.get(k, 0.0) for k in ("stt_ms", "llm_ms", "tts_ms"))
    return {
        "stt": timings.get("stt_ms", 0.0),
        "llm": timings.get("llm_ms", 0.0),
        "tts": timings.get("tts_ms", 0.0),
        "storage": timings.get("context_ms", 0.0) + timings.get("persist_ms", 0.0),
        "memory": timings.get("memory_ms", 0.0),
        "overhead": max(0.0, timings.get("total_ms", 0.0) - models),
    }


def report_stages(kind: str, body: dict[str, Any]) -> None:
    for stage, ms in stages(body.get("timings") or {}).items():
        if stage in ("stt", "tts") and kind == "text":  # text turns are neither heard nor spoken
            continue
        events.request.fire(request_type="STAGE", name=f"{kind} {stage}", response_time=ms,
                            response_length=0, exception=None, context={})  # fmt: skip


class Talker(HttpUser):
    wait_time = between(5 * THINK, 10 * THINK) if THINK else constant(0)

    def on_start(self) -> None:
        self.client.verify = CA_FILE
        self.client.headers["X-API-Key"] = API_KEY
        self.user_id = f"load-{uuid.uuid4().hex[:10]}"
        self.conversation: str | None = None
        self.turn = 0

    def _turn(self, kind: str, **request: Any) -> None:
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        path = "/api/text" if kind == "text" else "/api/audio"
        with self.client.post(path, headers=headers, name=path, catch_response=True,
                              timeout=60, **request) as resp:  # fmt: skip
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code}: {resp.text[:120]}")
                return
            body = resp.json()
            self.conversation = body["conversation_id"]
            report_stages(kind, body)

    @task(4)
    def text(self) -> None:
        self.turn += 1
        body: dict[str, Any] = {"text": PHRASES[self.turn % len(PHRASES)], "user_id": self.user_id}
        if self.conversation:
            body["conversation_id"] = self.conversation
        self._turn("text", json=body)

    @task(1)
    def audio(self) -> None:
        data = {"user_id": self.user_id, "want_audio": "true"}
        if self.conversation:
            data["conversation_id"] = self.conversation
        self._turn("audio", files={"file": ("turn.wav", WAV, "audio/wav")}, data=data)
