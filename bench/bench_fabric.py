"""Service-fabric overheads on loopback (prints numbers; never pass/fail).

    .venv/bin/python bench/bench_fabric.py

Starts a throwaway Consul agent (consul binary on PATH or MORGAN_CONSUL_BIN) and a real uvicorn
service, then measures:
  - ConsulServiceDiscovery.discover(): cached vs uncached (a Consul round trip each time)
  - one GET through MorganHTTPClient vs plain httpx.AsyncClient to the same instance
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi import APIRouter
from morgan.shared.app import create_app
from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.discovery import ConsulServiceDiscovery
from morgan.shared.http_client import MorganHTTPClient
from morgan.shared.settings import ServiceSettings

from tests.harness.ports import LOOPBACK, free_port
from tests.harness.servers import ConsulServer
from tests.shared.helpers import UvicornThread

N = 500


def pct(samples: list[float]) -> str:
    s = sorted(samples)
    p50 = statistics.median(s) * 1e3
    p95 = s[int(len(s) * 0.95) - 1] * 1e3
    return f"p50 {p50:.3f} ms  p95 {p95:.3f} ms  (n={len(s)})"


async def timed(fn, n: int = N) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, ConsulServer.run(Path(tmp)) as consul:
        factory = ConsulClientFactory.from_env(consul.addr)
        port = free_port()
        router = APIRouter()

        @router.get("/ping")
        async def ping() -> dict[str, bool]:
            return {"ok": True}

        settings = ServiceSettings(
            service_name="morgan-bench",
            host=LOOPBACK,
            bind_host=LOOPBACK,
            port=port,
            consul_http_addr=consul.addr,
            auth_enabled=False,
            consul_check_interval="1s",
        )
        with UvicornThread(create_app(settings, routers=[router]), port=port):
            cached = ConsulServiceDiscovery(factory, watch=False)
            uncached = ConsulServiceDiscovery(factory, watch=False, cache_seconds=0)
            for _ in range(100):
                try:
                    await cached.discover("morgan-bench")
                    break
                except Exception:
                    await asyncio.sleep(0.2)
            print(
                "discover() cached:   ", pct(await timed(lambda: cached.discover("morgan-bench")))
            )
            print(
                "discover() uncached: ", pct(await timed(lambda: uncached.discover("morgan-bench")))
            )
            url = f"http://{LOOPBACK}:{port}/ping"
            async with httpx.AsyncClient() as plain, MorganHTTPClient(cached) as client:
                for _ in range(50):
                    await plain.get(url)
                    await client.request("morgan-bench", "GET", "/ping")
                p = await timed(lambda: plain.get(url))
                m = await timed(lambda: client.request("morgan-bench", "GET", "/ping"))
            print("plain httpx GET:     ", pct(p))
            print("MorganHTTPClient GET:", pct(m))
            print(f"overhead p50: {(statistics.median(m) - statistics.median(p)) * 1e3:.3f} ms")
            cached.close()
            uncached.close()


if __name__ == "__main__":
    asyncio.run(main())
