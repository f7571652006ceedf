"""Time to build the Pulumi resource graph under mocks, and its size.

Stacks: homelab (the spec's 4 hosts) and a generated 100-host fleet.
Prints numbers; passes or fails nothing. Run: .venv/bin/python bench/infra_graph.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.config import load_stack_file, parse_stack_config  # noqa: E402
from infra.placement import Plan, make_plan  # noqa: E402
from infra.specs import build_specs  # noqa: E402
from tests.infra.program import build_under_mocks  # noqa: E402


def generated_fleet(count: int) -> dict[str, Any]:
    hosts = []
    for i in range(count):
        host: dict[str, Any] = {
            "name": f"n{i:03d}",
            "docker": f"ssh://morgan@n{i:03d}.lan",
            "address": f"n{i:03d}.lan",
            "os": "linux",
            "arch": "arm64" if i % 5 == 3 and i % 4 else "amd64",
            "memory_mb": 32768,
        }
        if i % 4 == 0:
            host["gpu"] = {"vendor": "nvidia", "vram_mb": 24576, "cuda": "12.4"}
        hosts.append(host)
    return {
        "stack": "fleet100",
        "domain": "morgan.example",
        "hosts": hosts,
        "services": {
            "core": {"replicas": 40},
            "llm": {"replicas": 40, "device": "cpu", "engine": "transformers"},
            "stt": {"replicas": 20, "device": "cuda", "engine": "faster-whisper"},
            "tts": {"replicas": 20, "device": "cuda"},
        },
        "consul": {"servers": ["n000", "n001", "n002", "n003", "n004"]},
        "postgres": {"primary": "n001", "standby": "n002"},
        "redis": {"mode": "cluster", "nodes": ["n001", "n002", "n003"]},
        "qdrant": {"mode": "server", "host": "n001"},
    }


def measure(name: str, plan_factory: Any, rounds: int) -> None:
    plan_times, graph_times = [], []
    resources = containers = 0
    for _ in range(rounds):
        start = time.perf_counter()
        plan: Plan = plan_factory()
        specs = build_specs(plan)
        plan_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        built = build_under_mocks(plan)
        graph_times.append(time.perf_counter() - start)
        resources = len(built.mocks.resources)
        containers = len(specs)
    print(
        f"{name:10s} hosts={len(plan.hosts):4d} containers={containers:5d}"
        f" resources={resources:6d}"
        f"  plan+specs median {statistics.median(plan_times) * 1000:8.1f} ms"
        f"  graph under mocks median {statistics.median(graph_times):6.2f} s"
        f" (min {min(graph_times):.2f} s, {rounds} rounds)"
    )


def main() -> None:
    measure("homelab", lambda: make_plan(load_stack_file(ROOT / "stacks/Pulumi.homelab.yaml")), 5)
    measure("fleet100", lambda: make_plan(parse_stack_config(generated_fleet(100))), 3)


if __name__ == "__main__":
    main()
