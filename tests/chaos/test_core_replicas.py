"""core replicas lost and restarted under load: the gateway sends each turn to a core that
answers, and every acknowledged turn is in PostgreSQL exactly once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from morgan.deploy.rollout import deploy
from morgan.lab import stack as st
from morgan.lab.secrets import read_env

from infra.deployment import secret_variable
from tests.chaos.conftest import Fleet
from tests.chaos.load import LoadReport, text_load

ROOT = Path(__file__).resolve().parents[2]
CORE_TOKEN = secret_variable("consul_token_core")

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.asyncio(loop_scope="session")]  # fmt: skip


def assert_nothing_lost(fleet: Fleet, report: LoadReport) -> None:
    acked = report.acknowledged
    stored = fleet.stored(acked)
    lost = [t for t in acked if t not in stored]
    twice = {t: n for t, n in stored.items() if n != 1}
    print(f"[{report.name}] acknowledged {len(acked)}, lost {len(lost)}, stored twice {len(twice)}")
    assert not lost and not twice, (lost[:5], twice)


async def test_killing_one_core_replica_fails_no_request(fleet: Fleet) -> None:
    victim = next(s for s in fleet.deployment.of_role("core") if s.host == "h3")
    load = asyncio.create_task(text_load("core-kill", fleet.gateway_url, fleet.api_key,
                                         fleet.ca_file, total=120, duration_s=45))  # fmt: skip
    await asyncio.sleep(10)
    fault = time.monotonic()
    await asyncio.to_thread(fleet.engine(victim).run, "kill", victim.name)
    await asyncio.sleep(15)
    await asyncio.to_thread(fleet.engine(victim).run, "start", victim.name)
    back = await asyncio.to_thread(fleet.wait_healthy, victim)
    report = await load
    again = time.monotonic() - fault
    print(report.summary(10.0),
          f"; {victim.name} healthy again {again:.0f} s after the kill ({back:.0f} s after"
          " its start)")  # fmt: skip
    answered_by = {a.instance for a in report.answers[-20:] if a.instance}
    print(f"[core-kill] the last 20 turns were answered by {sorted(answered_by)}")
    assert not report.failed, report.why_failed(10.0)
    assert_nothing_lost(fleet, report)


async def test_a_deploy_that_rotates_cores_consul_token_fails_no_request(
    fleet: Fleet,
) -> None:
    """`morgan deploy` after core's Consul token is rotated (its line dropped from the
    stack's secrets file): the cores are replaced one host at a time, each stopped
    gracefully (out of the gateway first, then drained) and healthy before the next; the
    old token is deleted only at the end. The client keeps the gateway's affinity cookie,
    as a browser does, so it is moved off each core as that one leaves."""
    paths = st.paths("lab", ROOT)
    old = read_env(paths.env_file)[CORE_TOKEN]
    kept = [line for line in paths.env_file.read_text().splitlines()
            if not line.startswith(f"{CORE_TOKEN}=")]  # fmt: skip
    paths.env_file.write_text("".join(f"{line}\n" for line in kept))
    load = asyncio.create_task(text_load("core-rolling", fleet.gateway_url, fleet.api_key,
                                         fleet.ca_file, total=120, duration_s=120,
                                         sticky=True))  # fmt: skip
    await asyncio.sleep(5)
    started = time.monotonic()
    deployed = await asyncio.to_thread(deploy, fleet.config, ROOT, paths, print)
    took = time.monotonic() - started
    report = await load
    replaced = sorted(n for changes in deployed.changes.values()
                      for n, change in changes.items() if change == "replaced")  # fmt: skip
    cores = sorted(s.name for s in fleet.deployment.of_role("core"))
    answered_by = sorted({a.instance for a in report.answers if a.instance})
    print(report.summary(5.0), f"; deploy {took:.0f} s replaced {replaced};"
          f" answered by {answered_by}")  # fmt: skip
    assert replaced == cores
    assert took < 115, "the deploy outlasted the load"
    assert not report.failed, report.why_failed(5.0)
    assert len(answered_by) >= 2, "the sticky client was never moved off a replaced core"
    assert_nothing_lost(fleet, report)
    new = read_env(paths.env_file)[CORE_TOKEN]
    assert new != old
    consul = fleet.outputs["consul_ui_url"].removesuffix("/ui/")
    for token, status in ((old, 403), (new, 200)):
        answer = httpx.get(f"{consul}/v1/kv/morgan/config/core/?keys=true",
                           headers={"X-Consul-Token": token}, verify=str(fleet.ca_file),
                           timeout=10)  # fmt: skip
        print(f"core's {'old' if token == old else 'new'} token: {answer.status_code}")
        assert answer.status_code == status, answer.text[:200]
