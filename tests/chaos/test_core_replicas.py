"""core replicas lost and restarted under load: the gateway sends each turn to a core that
answers, and every acknowledged turn is in PostgreSQL exactly once."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chaos.conftest import Fleet
from tests.chaos.load import LoadReport, text_load

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


async def test_rolling_restart_of_every_core_fails_no_request(fleet: Fleet) -> None:
    """Each core in turn stops gracefully (SIGTERM: it drains, leaves Consul, finishes what
    it holds), starts again and is healthy before the next one goes."""
    cores = list(fleet.deployment.of_role("core"))
    load = asyncio.create_task(text_load("core-rolling", fleet.gateway_url, fleet.api_key,
                                         fleet.ca_file, total=120, duration_s=90))  # fmt: skip
    await asyncio.sleep(5)
    took = []
    for core in cores:
        t = time.monotonic()
        await asyncio.to_thread(fleet.engine(core).run, "stop", "-t", "30", core.name)
        await asyncio.to_thread(fleet.engine(core).run, "start", core.name)
        await asyncio.to_thread(fleet.wait_healthy, core)
        took.append(f"{core.name} {time.monotonic() - t:.0f} s")
    report = await load
    print(report.summary(5.0), f"; restarted: {', '.join(took)}")
    assert not report.failed, report.why_failed(5.0)
    assert_nothing_lost(fleet, report)
