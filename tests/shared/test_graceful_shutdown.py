"""SIGTERM on a real service process: not ready, deregistered, still answering new requests
for its shutdown delay (while /health says 503 to the gateway), in-flight request completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from morgan.shared.consul_client import ConsulClientFactory

from tests.harness.ports import LOOPBACK, free_port
from tests.shared.helpers import eventually, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_deregisters_then_drains_in_flight_request(
    consul: ConsulClientFactory,
    tmp_path: Path,
) -> None:
    name = unique_name()
    port = free_port()
    env = {
        **os.environ,
        "CONSUL_HTTP_ADDR": consul.addr,
        "MORGAN_SIGTEST_SERVICE_NAME": name,
        "MORGAN_SIGTEST_PORT": str(port),
        "MORGAN_SIGTEST_HOST": LOOPBACK,
        "MORGAN_SIGTEST_BIND_HOST": LOOPBACK,
        "MORGAN_SIGTEST_AUTH_ENABLED": "false",
        "MORGAN_SIGTEST_CONSUL_CHECK_INTERVAL": "1s",
        "MORGAN_SIGTEST_SHUTDOWN_DRAIN_SECONDS": "20",
        "MORGAN_SIGTEST_SHUTDOWN_DELAY_SECONDS": "2",
    }
    log_path = tmp_path / "service.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.shared.sigterm_service"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    sid = f"{name}-{LOOPBACK}-{port}"
    try:

        def passing() -> bool:
            _, entries = consul.client().health.service(name, passing=True)
            return any(e["Service"]["ID"] == sid for e in entries)

        eventually(
            passing,
            timeout=20,
            what=f"{sid} passing in Consul; log:\n"
            f"{log_path.read_text() if log_path.exists() else ''}",
        )
        result: dict[str, object] = {}

        def slow_call() -> None:
            try:
                r = httpx.get(
                    f"http://{LOOPBACK}:{port}/api/slow", params={"seconds": 3}, timeout=30
                )
                result["status"] = r.status_code
                result["body"] = r.json()
            except Exception as exc:
                result["error"] = exc
            result["done_at"] = time.monotonic()

        t = threading.Thread(target=slow_call)
        t.start()
        time.sleep(0.7)  # the request is in flight
        proc.send_signal(signal.SIGTERM)
        eventually(
            lambda: sid not in consul.client().agent.services(),
            timeout=5,
            what="deregistration after SIGTERM",
        )
        deregistered_at = time.monotonic()
        # The delay: a request sent now is still answered, and /health tells the gateway.
        health = httpx.get(f"http://{LOOPBACK}:{port}/health", timeout=5)
        assert health.status_code == 503 and health.json()["status"] == "draining"
        late = httpx.get(f"http://{LOOPBACK}:{port}/api/slow", params={"seconds": 0}, timeout=5)
        assert late.status_code == 200, late.text
        t.join(30)
        assert result.get("status") == 200, result
        assert result["body"] == {"slept": 3.0}
        assert deregistered_at < result["done_at"]  # deregistered before the drain finished
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    text = log_path.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    assert any("SIGTERM" in ln for ln in lines), text
