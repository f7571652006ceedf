"""Hands-free voice turns against a running stack, through its gateway: numbers only.

A client streams espeak-ng speech in real time (20 ms frames of 16 kHz PCM) on
/ws/stream in hands-free mode, then silence, and measures for each turn:
  end of speech -> speech_ended (morgan-vad's min_silence_ms and the stream)
               -> transcription (STT) -> first response_text (LLM's first token)
               -> first response_audio (TTS of the first sentence): the first reply audio
Then barge-in: the person speaks again as soon as their turn has started (speech_ended:
the answer is being made; a short answer could otherwise end first); the time from the
first frame of that speech to `interrupted` (morgan-vad needs min_speech_ms of speech)
and core's own reaction (VAD event -> LLM stream and TTS calls cancelled).
Also Silero VAD's windows per second on one core (bench/bench_vad.py's measure).

Every utterance counts in core's audio rate limit (audio_rate_limit_per_minute, per
client address): the lab's is 600 a minute; on a stack with the default 10, raise it for
the run (`morgan config set core audio_rate_limit_per_minute 200`).

    .venv/bin/python bench/bench_voice.py [--stack lab] [--turns 50] [--barge-ins 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr
import websockets

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "services"), str(REPO / "bench")]

from bench_vad import bench_model, speech_with_pauses  # noqa: E402
from load_lab import lab_target  # noqa: E402

RATE = 16000
FRAME = 640  # 20 ms
STAGES = ("vad", "stt", "llm_first_token", "tts_first_sentence", "first_audio")


def pcm_of(wav: Path) -> bytes:
    data, rate = soundfile.read(wav, dtype="float32")
    samples = np.asarray(soxr.resample(data, rate, RATE), dtype=np.float32)
    loud = np.flatnonzero(np.abs(samples) > 0.02)
    samples = samples[loud[0] : loud[-1] + 1]
    return bytes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


class Client:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            self.events.append((time.monotonic(), json.loads(raw)))

    async def stream(self, pcm: bytes) -> float:
        """Send in real time; the wall time the last frame went out."""
        started = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), FRAME)):
            await self.ws.send(pcm[offset : offset + FRAME])
            await asyncio.sleep(max(0.0, started + (index + 1) * 0.02 - time.monotonic()))
        return time.monotonic()

    def first(self, kind: str, since: int) -> tuple[float, dict[str, Any]] | None:
        return next(((t, e) for t, e in self.events[since:] if e["type"] == kind), None)

    async def until(self, kinds: tuple[str, ...], since: int, timeout: float) -> str:
        """Silence in real time until one of `kinds` arrives; which one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for kind in kinds:
                if self.first(kind, since):
                    return kind
            await self.stream(b"\x00\x00" * 1600)
        raise TimeoutError(f"none of {kinds} within {timeout} s: {self.events[since:][-5:]}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def turns(client: Client, speech: bytes, count: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {stage: [] for stage in STAGES}
    failed = 0
    for _ in range(count):
        since = len(client.events)
        spoke_until = await client.stream(speech)
        kind = await client.until(("response_complete", "error"), since, 60)
        if kind == "error":
            error = client.first("error", since)
            if error and error[1].get("status") == 429:
                sys.exit(f"rate limited: {error[1]['message']} (see the docstring)")
            failed += 1
            print(f"  turn failed: {error}")
            continue
        times = {k: client.first(k, since) for k in
                 ("speech_ended", "transcription", "response_text", "response_audio")}  # fmt: skip
        if any(v is None for v in times.values()):
            failed += 1
            continue
        at = {k: v[0] for k, v in times.items() if v is not None}
        found["vad"].append(at["speech_ended"] - spoke_until)
        found["stt"].append(at["transcription"] - at["speech_ended"])
        found["llm_first_token"].append(at["response_text"] - at["transcription"])
        found["tts_first_sentence"].append(at["response_audio"] - at["response_text"])
        found["first_audio"].append(at["response_audio"] - spoke_until)
        await client.stream(b"\x00\x00" * 8000)  # half a second before the next one
    if failed:
        print(f"  {failed} of {count} turns failed or had no audio")
    return found


async def barge_ins(client: Client, speech: bytes, count: int) -> None:
    heard, reaction, finished = [], [], 0
    for _ in range(count):
        since = len(client.events)
        await client.stream(speech)
        await client.until(("speech_ended",), since, 60)
        interrupt_from = len(client.events)
        first_frame = time.monotonic()
        await client.stream(speech)
        cut = client.first("interrupted", interrupt_from)
        if cut is None:
            finished += 1  # the answer was over before the person spoke
        else:
            heard.append(cut[0] - first_frame)
            reaction.append(float(cut[1]["reaction_ms"]) / 1e3)
        await client.until(("response_complete", "error"), interrupt_from, 60)
        await client.stream(b"\x00\x00" * 8000)
    if heard:
        print(f"barge-in ({len(heard)} of {count}; {finished} answers ended first):"
              f" speech start -> interrupted p50 {1e3 * pct(heard, 0.5):.0f} ms,"
              f" p95 {1e3 * pct(heard, 0.95):.0f} ms; core's reaction p50"
              f" {1e3 * pct(reaction, 0.5):.2f} ms, max {1e3 * max(reaction):.2f} ms")  # fmt: skip
    else:
        print(f"barge-in: every one of {count} answers ended before the person spoke again")


async def main_async(stack: str, count: int, barges: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        target = lab_target(stack, Path(tmp))
        speech = pcm_of(target.wav)
        context = ssl.create_default_context(cafile=str(target.ca_file))
        url = target.url.replace("https://", "wss://").replace("http://", "ws://")
        async with websockets.connect(
            f"{url}/ws/stream", additional_headers={"X-API-Key": target.api_key},
            ssl=context if url.startswith("wss") else None, max_size=2**24,
        ) as ws:  # fmt: skip
            client = Client(ws)
            await ws.send(json.dumps({"type": "start", "mode": "hands_free"}))
            print(f"{stack}: {len(speech) / 2 / RATE:.1f} s utterances, {count} turns")
            found = await turns(client, speech, count)
            for stage in STAGES:
                values = found[stage]
                if values:
                    print(f"  {stage:<20} p50 {1e3 * pct(values, 0.5):6.0f} ms"
                          f"  p95 {1e3 * pct(values, 0.95):6.0f} ms")  # fmt: skip
            await barge_ins(client, speech, barges)
            client.reader.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="lab")
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--barge-ins", type=int, default=10)
    args = parser.parse_args()
    bench_model(speech_with_pauses(20.0))
    asyncio.run(main_async(args.stack, args.turns, args.barge_ins))


if __name__ == "__main__":
    main()
