"""`morgan status --stack lab` on the deployed lab: a table per host, titled with the
host's CPU, memory and disk use from node-exporter, with every planned container running
and healthy, Consul's view of each registered service, and the request
numbers of Morgan's services from Prometheus (a live service always has some: Consul's
checks and Prometheus's scrapes are requests too). A stopped container shows, and fails
the status."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from morgan.deploy.rollout import DeployReport
from morgan.deploy.status import consul_service
from morgan.lab import stack as st

from infra.deployment import build_deployment
from infra.placement import make_plan

ROOT = Path(__file__).resolve().parents[2]
MORGAN = str(ROOT / ".venv" / "bin" / "morgan")

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _status() -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="240", NO_COLOR="1", TERM="dumb")
    return subprocess.run([MORGAN, "status", "--stack", "lab"], capture_output=True, text=True,
                          env=env, timeout=300, check=False)  # fmt: skip


def _cells(stdout: str, container: str) -> list[str]:
    row = next((ln for ln in stdout.splitlines() if f"│ {container} " in ln), None)
    assert row is not None, f"{container} is not listed"
    return [c.strip() for c in row.strip().strip("│").split("│")]


def test_every_host_and_container_with_its_health(lab_fleet: DeployReport) -> None:
    deployment = build_deployment(make_plan(st.load_config("lab", ROOT)), ROOT)
    result = _status()
    print(result.stdout[-8000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "warning:" not in result.stdout
    # Each host's title: reachable, nothing needing attention, and node-exporter's numbers.
    for host in deployment.plan.hosts:
        title = (rf"^{host.name}\s+{re.escape(host.docker)}\s+ok"
                 r"\s+cpu (\d+)%\s+mem (\d+)%\s+disk (\d+)%\s*$")  # fmt: skip
        found = re.search(title, result.stdout, re.M)
        assert found, host.name
        cpu, memory, disk = (int(v) for v in found.groups())
        assert 0 <= cpu <= 100 and 0 < memory < 100 and 0 < disk < 100, found.group(0)
    for spec in deployment.specs:
        if spec.one_shot:
            continue
        cells = _cells(result.stdout, spec.name)
        assert cells[1] == "running", cells
        assert cells[2] in ("healthy", "-"), cells
        expected = "passing" if consul_service(spec) else "-"
        assert cells[3] == expected, cells
        if spec.role in ("core", "llm", "stt", "tts"):
            assert float(cells[4]) > 0, f"{spec.name}: no requests in the last 5 minutes: {cells}"
            assert cells[5] in ("-", "0.00"), f"{spec.name} answered 5xx: {cells}"
            assert float(cells[6]) > 0, cells


def test_a_stopped_container_shows_and_fails_the_status(lab_fleet: DeployReport) -> None:
    from morgan.deploy.rollout import engines

    config = st.load_config("lab", ROOT)
    deployment = build_deployment(make_plan(config), ROOT)
    victim = deployment.of_role("alertmanager")[0]
    engine = engines(config, ROOT)[victim.host]
    engine.text("stop", victim.name, timeout=120)
    try:
        # Docker knows at once; Consul's TCP check runs every 10 s. Bounded: 12 tries, 60 s.
        for attempt in range(1, 13):
            result = _status()
            cells = _cells(result.stdout, victim.name)
            if cells[3] == "critical":
                break
            print(f"try {attempt}: {victim.name} is {cells[1]}, Consul still says {cells[3]}")
            time.sleep(5)
        print(result.stdout[-3000:])
        assert result.returncode == 1
        title = rf"^{victim.host}\s+\S+\s+needs attention\s+cpu \d+%\s+mem \d+%\s+disk \d+%\s*$"
        assert re.search(title, result.stdout, re.M)
        assert cells[1] == "exited", cells
        assert cells[3] == "critical", cells
    finally:
        engine.text("start", victim.name, timeout=120)
