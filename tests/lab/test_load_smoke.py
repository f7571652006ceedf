"""A short run of the lab load benchmark (bench/load_lab.py): locust drives a few users'
conversations, text and spoken, through the lab's gateway, and the table it prints has
every endpoint and stage, with no failed request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from morgan.deploy.rollout import DeployReport

# The first lab test of a run brings the fleet up: hence the long timeout.
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(3000)]

ROOT = Path(__file__).resolve().parents[2]


def test_the_load_benchmark_runs_on_the_lab(lab_fleet: DeployReport) -> None:
    proc = subprocess.run(
        # 1-2 s between a user's turns: some fifty turns, about one in five spoken.
        [sys.executable, str(ROOT / "bench" / "load_lab.py"), "--users", "5", "--duration", "25",
         "--think", "0.2"],
        capture_output=True, text=True, timeout=240, cwd=ROOT, check=False,
    )  # fmt: skip
    print(proc.stdout, proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("POST", "STAGE"):
            rows[" ".join(parts[1:-6])] = [float(p) for p in parts[-6:]]
    for name in ("/api/text", "/api/audio", "text llm", "text overhead", "audio stt",
                 "audio tts", "audio overhead"):  # fmt: skip
        assert name in rows, (name, sorted(rows))
    assert rows["/api/text"][0] > 0 and rows["/api/text"][1] == 0, rows["/api/text"]
    assert rows["/api/audio"][1] == 0, rows["/api/audio"]
