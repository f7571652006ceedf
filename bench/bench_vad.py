"""morgan-vad on this machine, in one run: numbers only.

- the model alone: 32 ms windows per second on one thread (one CPU core), and the real-time
  factor that gives;
- a whole file through the service in process (`POST /v1/vad`, 20 s of espeak-ng speech
  and pauses): latency p50/p95;
- the stream WebSocket, fed 20 ms frames as fast as it answers: per-frame time p50/p95
  (what a live stream adds before an event can be sent), and how many streams one core
  could carry in real time.

    .venv/bin/python bench/bench_vad.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

RATE = 16000


def speech_with_pauses(seconds: float) -> np.ndarray:
    """espeak-ng sentences with 1 s pauses, repeated to about `seconds`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        text = "Hello Morgan, please turn on the kitchen lights."
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        data, rate = sf.read(path, dtype="float32")
    sentence = np.asarray(soxr.resample(data, rate, RATE), dtype=np.float32)
    pause = np.zeros(RATE, np.float32)
    parts: list[np.ndarray] = []
    while sum(len(p) for p in parts) < seconds * RATE:
        parts += [pause, sentence]
    return np.concatenate([*parts, pause])


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def bench_model(audio: np.ndarray) -> None:
    from morgan.vad.engine import WINDOW, SileroModel, bundled_model_path

    model = SileroModel(bundled_model_path(), threads=1).load()
    stream = model.stream()
    windows = [audio[i : i + WINDOW] for i in range(0, len(audio) - WINDOW + 1, WINDOW)]
    started = time.perf_counter()
    for window in windows:
        stream.probability(window)
    elapsed = time.perf_counter() - started
    per_s = len(windows) / elapsed
    print(f"model, 1 thread: {per_s:,.0f} windows/s ({per_s * WINDOW / RATE:,.0f}x real time),"
          f" {1e3 * elapsed / len(windows):.3f} ms per 32 ms window")  # fmt: skip


def bench_service(audio: np.ndarray, rounds: int) -> None:
    from fastapi.testclient import TestClient
    from morgan.vad.app import build_app
    from morgan.vad.config import VADSettings

    local = {"register_in_consul": False, "auth_enabled": False, "host": "127.0.0.1"}
    settings = VADSettings.model_validate(local)
    buffer = io.BytesIO()
    sf.write(buffer, audio, RATE, format="WAV", subtype="PCM_16")
    wav = buffer.getvalue()
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    with TestClient(build_app(settings)) as client:
        while client.get("/ready").status_code != 200:
            time.sleep(0.05)
        took: list[float] = []
        for _ in range(rounds):
            started = time.perf_counter()
            reply = client.post("/v1/vad", files={"file": ("a.wav", wav)})
            took.append(time.perf_counter() - started)
            assert reply.status_code == 200, reply.text
        segments = len(reply.json()["segments"])
        p50, p95 = 1e3 * pct(took, 0.5), 1e3 * pct(took, 0.95)
        print(f"POST /v1/vad, {len(audio) / RATE:.1f} s file ({segments} utterances):"
              f" p50 {p50:.0f} ms, p95 {p95:.0f} ms")  # fmt: skip
        frame = 640  # 20 ms
        per_frame: list[float] = []
        events = 0
        with client.websocket_connect("/v1/vad/stream") as ws:
            ws.send_text(json.dumps({"type": "start"}))
            ws.receive_json()
            for offset in range(0, len(pcm), frame):
                started = time.perf_counter()
                ws.send_bytes(pcm[offset : offset + frame])
                ws.send_text('{"type": "ping"}')
                while ws.receive_json()["type"] != "pong":
                    events += 1
                per_frame.append(time.perf_counter() - started)
        median = pct(per_frame, 0.5)
        print(f"stream, 20 ms frames ({events} events): p50 {1e3 * median:.2f} ms, p95"
              f" {1e3 * pct(per_frame, 0.95):.2f} ms per frame (a ping round trip included);"
              f" one core keeps up with ~{0.02 / median:.0f} streams")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    audio = speech_with_pauses(20.0)
    bench_model(audio)
    bench_service(audio, args.rounds)


if __name__ == "__main__":
    main()
