"""Core's own overhead per text turn: total time minus the time spent in model services.

Starts real Consul, PostgreSQL and a 3-node Redis Cluster on loopback, a zero-delay
OpenAI-compatible test LLM registered in Consul, and core itself as a separate
process (`python -m morgan.core`). Then sends text turns at 1 and at 50 concurrent
users and prints p50/p95 of:
  core overhead = timings.total_ms - (stt_ms + llm_ms + tts_ms)   (measured inside core)
  client latency (what a caller waits, including the LLM call)
Numbers only; nothing passes or fails.

    .venv/bin/python bench/bench_core.py [--turns 200] [--users 1,50] [--no-memory]
                                         [--memory-store qdrant|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "services")]

from morgan.shared.auth import ApiKeyStore  # noqa: E402
from morgan.shared.consul_client import ConsulClientFactory  # noqa: E402

from tests.core.servers import ModelInstance, echo_instance, wait_passing  # noqa: E402
from tests.harness.ports import free_port  # noqa: E402
from tests.harness.process import ManagedProcess  # noqa: E402
from tests.harness.servers import ConsulServer, PostgresServer, RedisCluster  # noqa: E402

LLM_NAME = "bench-echo-llm"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_load(
    url: str, key: str, users: int, turns: int
) -> tuple[list[float], list[float], int, list[dict[str, float]]]:
    stages: list[dict[str, float]] = []
    overhead: list[float] = []
    latency: list[float] = []
    errors = 0
    per_user = max(1, turns // users)
    limits = httpx.Limits(max_connections=users + 5, max_keepalive_connections=users + 5)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=120,
                                 limits=limits) as client:  # fmt: skip

        async def user(n: int) -> None:
            nonlocal errors
            cid = None
            for i in range(per_user):
                body = {"text": f"user {n} says hello number {i}", "user_id": f"bench-{n}"}
                if cid:
                    body["conversation_id"] = cid
                t = time.perf_counter()
                resp = await client.post("/api/text", json=body)
                elapsed = (time.perf_counter() - t) * 1000
                if resp.status_code != 200:
                    errors += 1
                    continue
                data = resp.json()
                cid = data["conversation_id"]
                tm = data["timings"]
                stages.append(tm)
                model = tm.get("stt_ms", 0) + tm.get("llm_ms", 0) + tm.get("tts_ms", 0)
                overhead.append(tm["total_ms"] - model)
                latency.append(elapsed)

        await asyncio.gather(*(user(n) for n in range(users)))
    return overhead, latency, errors, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200, help="turns per concurrency level")
    parser.add_argument("--users", default="1,50", help="concurrency levels, comma separated")
    parser.add_argument("--no-memory", action="store_true", help="switch semantic memory off")
    parser.add_argument(
        "--memory-store",
        choices=("qdrant", "postgres"),
        default="qdrant",
        help="where memories live (the fleet's is postgres: one for all cores)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-core-") as tmp_s:
        tmp = Path(tmp_s)
        with ConsulServer.run(tmp / "consul") as consul, \
             PostgresServer.run(tmp / "pg") as pg, \
             RedisCluster.run(tmp / "redis") as redis:  # fmt: skip
            llm: ModelInstance = echo_instance(LLM_NAME, consul.addr, tmp).start()
            _, key = ApiKeyStore(ConsulClientFactory.from_env(consul.addr)).create("bench")
            port = free_port()
            env = {
                **os.environ,
                "PYTHONPATH": f"{REPO}:{REPO / 'services'}",
                "CONSUL_HTTP_ADDR": consul.addr,
                "HF_HUB_OFFLINE": "1",
                "MORGAN_ADVERTISE_HOST": "127.0.0.1",
                "MORGAN_CORE_BIND_HOST": "127.0.0.1",
                "MORGAN_CORE_PORT": str(port),
                "MORGAN_CORE_POSTGRES_DSN": pg.dsn,
                "MORGAN_CORE_REDIS_CLUSTER_NODES": str(
                    [f"{h}:{p}" for h, p in redis.startup_nodes]
                ).replace("'", '"'),
                "MORGAN_CORE_QDRANT_PATH": str(tmp / "qdrant"),
                "MORGAN_CORE_LLM_SERVICE": LLM_NAME,
                "MORGAN_CORE_MEMORY_ENABLED": "false" if args.no_memory else "true",
                "MORGAN_CORE_MEMORY_STORE": args.memory_store,
                # One client sends every turn here: per-client rate limits would refuse most.
                "MORGAN_CORE_RATE_LIMIT_PER_MINUTE": "0",
                "MORGAN_CORE_AUDIO_RATE_LIMIT_PER_MINUTE": "0",
                "MORGAN_CORE_LOG_LEVEL": "WARNING",
            }
            core = ManagedProcess("core", [sys.executable, "-m", "morgan.core"],
                                  tmp / "core.log", env=env, cwd=REPO)  # fmt: skip
            core.start()
            try:
                wait_passing(consul.addr, "morgan-core", port, timeout=120)
                url = f"http://127.0.0.1:{port}"
                asyncio.run(run_load(url, key, 1, 20))  # warm-up
                memory = (
                    "off" if args.no_memory else f"on (embed + {args.memory_store} search + store)"
                )
                print(f"core overhead per text turn — 2-core host, semantic memory {memory}")
                print(f"{'users':>6} {'turns':>6} {'err':>4} {'overhead p50':>13} "
                      f"{'p95':>8} {'latency p50':>12} {'p95':>8} {'turns/s':>8}")  # fmt: skip
                for users in [int(u) for u in args.users.split(",")]:
                    t = time.perf_counter()
                    over, lat, errors, stages = asyncio.run(run_load(url, key, users, args.turns))
                    wall = time.perf_counter() - t
                    print(f"{users:>6} {len(over):>6} {errors:>4} {pct(over, .5):>11.1f}ms "
                          f"{pct(over, .95):>6.1f}ms {pct(lat, .5):>10.1f}ms "
                          f"{pct(lat, .95):>6.1f}ms {len(over) / wall:>8.1f}")  # fmt: skip
                    if over:
                        print(f"{'':>6} mean overhead {statistics.mean(over):.1f} ms; "
                              "stage p50: " + ", ".join(
                                  f"{k.removesuffix('_ms')} {pct([t[k] for t in stages], .5):.1f}"
                                  for k in ("context_ms", "memory_ms", "llm_ms", "persist_ms")
                              ) + " ms")  # fmt: skip
            finally:
                core.stop()
                llm.stop()


if __name__ == "__main__":
    main()
