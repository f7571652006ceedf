"""h4 cut off from the other hosts for 30 s, then healed, under load through the gateway
(on h1). The majority side keeps serving: the gateway stops sending turns to h4's core
once its health check fails, Consul (two servers of three) keeps a leader, Redis Cluster
promotes the replica of h4's master. After the heal h4's core answers turns again, by
itself. No turn is lost or stored twice.

Failure budget: a turn the gateway sent to h4's core in the seconds before the health
check took it out (every 5 s, 2 s timeout) is held by a core that can no longer answer
(nor reach PostgreSQL); it ends when the client gives up. So failures are allowed only
for turns sent from the cut until GATEWAY_OUT_S after it, and every turn sent later
must succeed."""

from __future__ import annotations

import asyncio
import time

import pytest
from morgan.lab.polling import NotYet, poll

from infra.configs.data import REDIS_PORT
from tests.chaos.conftest import Fleet
from tests.chaos.load import ONE_LLM_LOST_TURNS_PER_S, text_load
from tests.chaos.network import cut_off
from tests.chaos.test_consul import wait_tolerant
from tests.chaos.test_core_replicas import assert_nothing_lost
from tests.chaos.test_redis import cluster, role_of

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.asyncio(loop_scope="session")]  # fmt: skip

CUT_AT_S = 15.0
CUT_FOR_S = 30.0
GATEWAY_OUT_S = 10.0  # health-check interval + timeout, and a margin
LOAD_S = 90.0
LOAD_TURNS = int(LOAD_S * ONE_LLM_LOST_TURNS_PER_S)  # h4's llm is cut off too


async def test_a_partitioned_host_leaves_the_gateway_and_comes_back(fleet: Fleet) -> None:
    cut = "h4"
    peers = [h.address for h in fleet.config.hosts if h.name != cut]
    marker = f"-{fleet.config.host(cut).address}-"
    started = time.monotonic()
    load = asyncio.create_task(text_load("partition-h4", fleet.gateway_url, fleet.api_key,
                                         fleet.ca_file, total=LOAD_TURNS,
                                         duration_s=LOAD_S))  # fmt: skip
    await asyncio.sleep(CUT_AT_S)
    fault = time.monotonic() - started
    with cut_off(cut, peers):
        await asyncio.sleep(CUT_FOR_S)
    healed = time.monotonic() - started
    report = await load

    def from_cut(lo: float, hi: float) -> list[float]:
        return [a.sent_s for a in report.answers
                if lo <= a.sent_s < hi and a.instance and marker in a.instance]  # fmt: skip

    while_cut = from_cut(fault + GATEWAY_OUT_S, healed)
    back = from_cut(healed, float("inf"))
    before = from_cut(0.0, fault)
    again = f"{back[0] - healed:.1f} s" if back else "never"
    print(report.summary(fault), f"; {cut} cut off at {fault:.0f} s for {CUT_FOR_S:.0f} s:"
          f" its core answered {len(before)} turns before, {len(while_cut)} while cut off,"
          f" first again {again} after the heal")  # fmt: skip
    assert before, "h4's core answered no turn before the cut: the load did not reach it"
    assert while_cut == [], while_cut
    assert back, "h4's core never answered again after the heal"
    for a in report.failed:
        assert fault - 1.0 <= a.sent_s <= fault + GATEWAY_OUT_S, a
    assert_nothing_lost(fleet, report)
    await asyncio.to_thread(rejoin_whole, fleet, cut)


def rejoin_whole(fleet: Fleet, host: str) -> None:
    """Consul whole again, and `host`'s Redis master (replaced on the majority side while
    it was cut off) a replica, then given its slots back: the plan's placement."""
    wait_tolerant(fleet, next(s for s in fleet.deployment.of_role("consul-agent")
                              if s.host == "h2"))  # fmt: skip
    masters = fleet.deployment.of_role("redis")
    node = next(m for m in masters if m.host == host)
    observer = next(m for m in masters if m.host == "h1")
    address = f"{fleet.config.host(host).address}:{REDIS_PORT}"

    def settled() -> None:
        if (role := role_of(fleet, observer, address)) not in ("master", "slave"):
            raise NotYet(role)

    poll(settled, what=f"{host}'s Redis node back in the cluster", timeout=120, interval=1)
    if role_of(fleet, observer, address) == "slave":
        cluster(fleet, node, "cluster", "failover")

        def master_again() -> None:
            if (role := role_of(fleet, observer, address)) != "master":
                raise NotYet(role)

        poll(master_again, what=f"{host}'s Redis node master again", timeout=60, interval=1)
    print(f"[partition-{host}] Consul whole, {host}'s Redis node master of its slots again")
