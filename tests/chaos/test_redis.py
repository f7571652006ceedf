"""A Redis Cluster master lost under load: turns keep succeeding (a cache error is a
miss), the master's replica on another host takes its slots, and the old master comes
back as a replica, then takes its place back (the plan's placement)."""

from __future__ import annotations

import asyncio
import time

import pytest
from morgan.lab.polling import NotYet, poll

from infra.configs.data import REDIS_PORT, redis_cli
from infra.model import ContainerSpec
from tests.chaos.conftest import Fleet
from tests.chaos.load import text_load
from tests.chaos.test_core_replicas import assert_nothing_lost

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.asyncio(loop_scope="session")]  # fmt: skip


def cluster(fleet: Fleet, node: ContainerSpec, *args: str) -> str:
    cli = f"{redis_cli(fleet.deployment.plan)} {' '.join(args)}"
    return fleet.engine(node).text("exec", node.name, "sh", "-c", cli, timeout=60)


def role_of(fleet: Fleet, asked: ContainerSpec, address: str) -> str:
    """'master', 'slave' or 'fail' for the node at `address` (ip:port), as `asked` sees it."""
    for line in cluster(fleet, asked, "cluster", "nodes").splitlines():
        parts = line.split()
        if parts[1].split("@")[0] == address:
            flags = parts[2]
            if "fail" in flags and "fail?" not in flags:
                return "fail"
            return "master" if "master" in flags else "slave"
    return "unknown"


async def test_killing_a_redis_master_fails_no_turn(fleet: Fleet) -> None:
    masters = fleet.deployment.of_role("redis")
    victim = next(m for m in masters if m.host == "h4")
    observer = next(m for m in masters if m.host != victim.host)
    address = f"{fleet.config.host(victim.host).address}:{REDIS_PORT}"
    assert role_of(fleet, observer, address) == "master"
    load = asyncio.create_task(text_load("redis-master-kill", fleet.gateway_url, fleet.api_key,
                                         fleet.ca_file, total=100, duration_s=45))  # fmt: skip
    await asyncio.sleep(8)
    fault = time.monotonic()
    await asyncio.to_thread(fleet.engine(victim).run, "kill", victim.name)

    def slots_moved() -> None:
        info = cluster(fleet, observer, "cluster", "info")
        if "cluster_state:ok" not in info or role_of(fleet, observer, address) != "fail":
            raise NotYet(info.splitlines()[0])

    await asyncio.to_thread(poll, slots_moved, what="a replica promoted", timeout=120,
                            interval=0.5)  # fmt: skip
    promoted = time.monotonic() - fault
    await asyncio.to_thread(fleet.engine(victim).run, "start", victim.name)
    await asyncio.to_thread(fleet.wait_healthy, victim)

    def rejoined() -> None:
        if role_of(fleet, observer, address) != "slave":
            raise NotYet(role_of(fleet, observer, address))

    await asyncio.to_thread(poll, rejoined, what="the old master back as a replica",
                            timeout=120, interval=1)  # fmt: skip
    rejoin = time.monotonic() - fault
    report = await load
    print(report.summary(8.0), f"; cluster ok with the replica promoted {promoted:.1f} s after"
          f" the kill, old master a replica again after {rejoin:.0f} s")  # fmt: skip
    # Take the plan's placement back: the old master asks for its slots again.
    await asyncio.to_thread(cluster, fleet, victim, "cluster", "failover")

    def master_again() -> None:
        if role_of(fleet, observer, address) != "master":
            raise NotYet(role_of(fleet, observer, address))

    await asyncio.to_thread(poll, master_again, what="the old master master again",
                            timeout=60, interval=1)  # fmt: skip
    assert not report.failed, report.why_failed(8.0)
    assert_nothing_lost(fleet, report)
