"""CPU engines side by side, in one run, on this machine: numbers and ratios only.

- LLM: llama.cpp (the tiny test LLM as GGUF) against transformers (the same model in
  Hugging Face format): tokens/s and time to first token, streaming through the service
  in process, at 1 and 4 concurrent requests.
- Core embeddings: ONNX Runtime against sentence-transformers, texts per second, the
  bundled MiniLM, batches of 8.

    .venv/bin/python bench/bench_cpu_engines.py [--rounds 3] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HELLO = [{"role": "user", "content": "Hello, who are you?"}]


async def stream_once(client: httpx.AsyncClient, tokens: int) -> tuple[float, float, int]:
    """(time to first token, total seconds, completion tokens) of one streamed reply."""
    body = {"messages": HELLO, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    start = time.perf_counter()
    first: float | None = None
    used = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if first is None and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - start
            if '"usage"' in line and '"completion_tokens"' in line:
                used = int(line.split('"completion_tokens":')[1].split(",")[0].split("}")[0])
    total = time.perf_counter() - start
    return (first if first is not None else total), total, used


async def bench_llm(engine: str, model_dir: Path, rounds: int, tokens: int) -> dict[str, float]:
    from morgan.llm.app import build_app
    from morgan.llm.config import LLMSettings

    settings = LLMSettings(model_dir=model_dir, model="tiny", engine=engine, max_concurrency=4,
                           register_in_consul=False, auth_enabled=False, host="127.0.0.1",
                           torch_threads=1)  # fmt: skip
    app = build_app(settings)
    out: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc",
                                     timeout=300) as client:  # fmt: skip
            while (await client.get("/ready")).status_code != 200:
                await asyncio.sleep(0.05)
            await stream_once(client, 4)  # warm-up
            for n in (1, 4):
                rates, ttfts = [], []
                for _ in range(rounds):
                    start = time.perf_counter()
                    results = await asyncio.gather(*(stream_once(client, tokens) for _ in range(n)))
                    wall = time.perf_counter() - start
                    rates.append(sum(r[2] for r in results) / wall)
                    ttfts.extend(r[0] for r in results)
                out[f"tokens/s c{n}"] = statistics.median(rates)
                out[f"ttft ms c{n}"] = statistics.median(ttfts) * 1000
    return out


def bench_embeddings(rounds: int) -> dict[str, float]:
    from morgan.core.memory import onnx_export
    from morgan.core.memory.embedder import SentenceEmbedder
    from sentence_transformers import SentenceTransformer

    texts = [f"Sentence number {i}: turn on the kitchen lights at {i % 24} o'clock."
             for i in range(200)]  # fmt: skip
    onnx = SentenceEmbedder(threads=1)
    torch_model = SentenceTransformer(str(onnx_export.bundled_model_dir()), device="cpu")
    import torch

    torch.set_num_threads(1)
    out: dict[str, float] = {}
    for name, encode in (
        ("onnx", lambda batch: onnx.embed_many_sync(batch)),
        ("sentence-transformers",
         lambda batch: torch_model.encode(batch, normalize_embeddings=True, batch_size=8)),
    ):  # fmt: skip
        encode(texts[:8])
        rates = []
        for _ in range(rounds):
            start = time.perf_counter()
            for i in range(0, len(texts), 8):
                encode(texts[i : i + 8])
            rates.append(len(texts) / (time.perf_counter() - start))
        out[name] = statistics.median(rates)
    onnx.close()
    return out


def main() -> None:
    from morgan.models.testing import cached_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine, kind in (("llama.cpp", "llm-gguf"), ("transformers", "llm")):
            root = Path(tmp) / engine
            shutil.copytree(cached_tiny_model(kind), root / "llm" / "tiny")  # type: ignore[arg-type]
            results[engine] = asyncio.run(bench_llm(engine, root, args.rounds, args.tokens))
    print(f"{'llm (tiny model, greedy, ' + str(args.tokens) + ' tokens)':<44}"
          f"{'llama.cpp':>12}{'transformers':>14}{'ratio':>8}")  # fmt: skip
    for key in results["llama.cpp"]:
        a, b = results["llama.cpp"][key], results["transformers"][key]
        print(f"  {key:<42}{a:>12.1f}{b:>14.1f}{a / b:>8.2f}")
    emb = bench_embeddings(args.rounds)
    onnx_rate, st_rate = emb["onnx"], emb["sentence-transformers"]
    print(f"{'embeddings (MiniLM, batches of 8, 1 thread)':<44}{'onnx':>12}"
          f"{'sent.-transf.':>14}{'ratio':>8}")  # fmt: skip
    print(f"  {'texts/s':<42}{onnx_rate:>12.1f}{st_rate:>14.1f}{onnx_rate / st_rate:>8.2f}")


if __name__ == "__main__":
    main()
