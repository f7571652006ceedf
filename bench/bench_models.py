"""Model services on this CPU with the tiny test models: LLM tokens/s, STT and TTS
real-time factor, one request at a time and 4 at once.

Each service runs in process (its FastAPI app with lifespan, reached through httpx's ASGI
transport), so the numbers include the serving path: request checks, the worker thread,
limits and metrics. The tiny models have random weights; what is measured is the serving
stack plus a small network, not a production model. Numbers only; nothing passes or fails.

    .venv/bin/python bench/bench_models.py [--rounds 3] [--llm-tokens 64]

RTF = processing seconds / audio seconds (below 1 is faster than real time). At
concurrency 4 the aggregate RTF is wall time / total audio seconds of the 4 requests.
--torch-threads sets torch's CPU threads for the whole process (llm and tts): with models
this small, torch's default pool of one thread per core mostly waits on itself, and on a
busy 2-core machine one thread was about 7x faster for the llm.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "services")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import soundfile as sf  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from morgan.models.testing import install_tiny_model  # noqa: E402

LOCAL = {
    "register_in_consul": False,
    "auth_enabled": False,
    "host": "127.0.0.1",
    "log_level": "WARNING",
}
SPEECH = (
    "Hello Morgan, please turn on the kitchen lights and set a timer for ten minutes. Thank you."
)
TTS_TEXT = "Good morning. The kitchen lights are on, and your timer is set for ten minutes."


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client,
    ):
        while (await client.get("/ready")).status_code != 200:
            await asyncio.sleep(0.05)
        yield client


async def timed(n: int, call: Callable[[], Awaitable[float]]) -> tuple[float, list[float]]:
    """Wall seconds for n concurrent calls, and what each call returned (its work units)."""
    started = time.perf_counter()
    units = await asyncio.gather(*(call() for _ in range(n)))
    return time.perf_counter() - started, list(units)


async def bench_llm(
    model_dir: Path, rounds: int, tokens: int, torch_threads: int
) -> list[tuple[str, str, str]]:
    from morgan.llm.app import build_app
    from morgan.llm.config import LLMSettings

    settings = LLMSettings(
        model_dir=model_dir, model="tiny", max_concurrency=4, torch_threads=torch_threads, **LOCAL
    )
    rows = []
    async with serving(build_app(settings)) as client:

        async def one() -> float:
            reply = await client.post(
                "/v1/chat/completions",
                json={
                    "messages": [{"role": "user", "content": "Tell me about the weather."}],
                    "max_tokens": tokens,
                    "temperature": 0,
                },
            )
            reply.raise_for_status()
            return float(reply.json()["usage"]["completion_tokens"])

        await one()  # warm-up
        for n in (1, 4):
            rates, per_request = [], []
            for _ in range(rounds):
                wall, units = await timed(n, one)
                rates.append(sum(units) / wall)
                per_request.append(units[0] / wall)
            rows.append(
                (
                    f"llm tokens/s, concurrency {n}, torch threads {torch_threads or 'auto'}",
                    f"{statistics.median(rates):.1f} total",
                    f"{statistics.median(per_request):.1f} per request",
                )
            )
    return rows


async def bench_stt(model_dir: Path, rounds: int, speech: bytes) -> list[tuple[str, str, str]]:
    from morgan.stt.app import build_app
    from morgan.stt.config import STTSettings

    seconds = sf.info(io.BytesIO(speech)).duration
    settings = STTSettings(model_dir=model_dir, model="tiny", max_concurrency=4, **LOCAL)
    rows = []
    async with serving(build_app(settings)) as client:

        async def one() -> float:
            reply = await client.post(
                "/transcribe", json={"audio": base64.b64encode(speech).decode(), "language": "en"}
            )
            reply.raise_for_status()
            return float(reply.json()["duration"])

        await one()
        for n in (1, 4):
            rtfs = []
            for _ in range(rounds):
                wall, units = await timed(n, one)
                rtfs.append(wall / sum(units))
            rows.append(
                (
                    f"stt real-time factor, concurrency {n}",
                    f"{statistics.median(rtfs):.3f}",
                    f"{seconds:.1f} s clip, {1 / statistics.median(rtfs):.0f}x real time",
                )
            )
    return rows


async def bench_tts(model_dir: Path, rounds: int) -> list[tuple[str, str, str]]:
    from morgan.tts.app import build_app
    from morgan.tts.config import TTSSettings

    settings = TTSSettings(model_dir=model_dir, max_concurrency=4, **LOCAL)
    rows = []
    async with serving(build_app(settings)) as client:

        async def one() -> float:
            reply = await client.post(
                "/v1/audio/speech",
                json={"input": TTS_TEXT, "voice": "tiny", "response_format": "pcm"},
            )
            reply.raise_for_status()
            return len(reply.content) / 2 / int(reply.headers["x-sample-rate"])

        await one()
        for n in (1, 4):
            rtfs, audio = [], 0.0
            for _ in range(rounds):
                wall, units = await timed(n, one)
                rtfs.append(wall / sum(units))
                audio = units[0]
            rows.append(
                (
                    f"tts real-time factor, concurrency {n}",
                    f"{statistics.median(rtfs):.3f}",
                    f"{audio:.1f} s of speech, {1 / statistics.median(rtfs):.0f}x real time",
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="repeats per row (median shown)")
    parser.add_argument("--llm-tokens", type=int, default=64, help="completion tokens per request")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch CPU threads for the llm (0 = torch's default); with a tiny "
        "model on a busy machine, 1 avoids thread-pool contention",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        model_dir = Path(tmp)
        for kind in ("llm", "stt", "tts"):
            install_tiny_model(kind, model_dir)  # type: ignore[arg-type]
        wav = model_dir / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), SPEECH], check=True, capture_output=True)
        speech = wav.read_bytes()

        async def run_all() -> list[tuple[str, str, str]]:
            return [
                *await bench_llm(model_dir, args.rounds, args.llm_tokens, args.torch_threads),
                *await bench_stt(model_dir, args.rounds, speech),
                *await bench_tts(model_dir, args.rounds),
            ]

        rows = asyncio.run(run_all())

    cpus = os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\nmodel services, tiny test models, CPU ({cpus} cores, load average {load}), "
        f"median of {args.rounds}"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>14}  note")
    print("-" * (width + 50))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>14}  {note}")


if __name__ == "__main__":
    main()
