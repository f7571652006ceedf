"""Host h3 stopped as a whole (its container: its daemon and every service on it) under
load, then started again. h3 carries a Consul server, a core, an llm, the PostgreSQL
standby, a Redis master and a Redis replica, Prometheus and Alertmanager.

While it is gone the fleet keeps serving: Consul keeps a leader (two servers of three),
Redis Cluster promotes the replica of h3's master, the PostgreSQL primary goes on alone
(Patroni takes the lost synchronous standby out of `synchronous_standby_names`), the
gateway and discovery drop h3's instances. When it is back every service on it comes
up by itself (restart policies), Consul is whole again, its Redis nodes rejoin as
replicas and its PostgreSQL member as the synchronous standby.

Failure budget: the turns h3's core or llm held when the host went, and those the
gateway sent to h3's core before its health check failed (every 5 s, 2 s timeout),
may fail; every turn sent later than GATEWAY_OUT_S after the host was gone must succeed.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
from morgan.lab.hosts import container_name
from morgan.lab.polling import NotYet, poll

from infra.configs.data import REDIS_PORT
from infra.model import ContainerSpec
from tests.chaos.conftest import Fleet
from tests.chaos.load import ONE_LLM_LOST_TURNS_PER_S, text_load
from tests.chaos.test_consul import leader_host, wait_tolerant
from tests.chaos.test_core_replicas import assert_nothing_lost
from tests.chaos.test_redis import cluster, role_of

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1200),
              pytest.mark.asyncio(loop_scope="session")]  # fmt: skip

STOP_AT_S = 10.0
GATEWAY_OUT_S = 10.0
LOAD_S = 90.0  # h3's llm is gone for most of it
LOAD_TURNS = int(LOAD_S * ONE_LLM_LOST_TURNS_PER_S)
BACK_AFTER_S = 35.0  # from the stop


def _lab_docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True, timeout=120)


async def _fleet_without(fleet: Fleet, lost: str, observer: ContainerSpec,
                         redis_observer: ContainerSpec, lost_redis: str,
                         gone: float) -> tuple[float, float]:  # fmt: skip
    """Seconds from `gone` until Consul led without `lost`, and until its Redis master's
    replica had taken over."""

    def consul_leads() -> None:
        try:
            now = leader_host(fleet, observer)
        except Exception as exc:
            raise NotYet(str(exc)[:200]) from exc
        if now == lost:
            raise NotYet(f"{now} still listed as leader")

    await asyncio.to_thread(poll, consul_leads, what=f"a Consul leader without {lost}",
                            timeout=60, interval=0.5)  # fmt: skip
    leader_s = time.monotonic() - gone

    def slots_moved() -> None:
        info = cluster(fleet, redis_observer, "cluster", "info")
        if "cluster_state:ok" not in info or role_of(fleet, redis_observer, lost_redis) != "fail":
            raise NotYet(info.splitlines()[0])

    await asyncio.to_thread(poll, slots_moved, what=f"{lost}'s Redis master replaced",
                            timeout=120, interval=0.5)  # fmt: skip
    return leader_s, time.monotonic() - gone


async def test_losing_host_h3_keeps_the_fleet_serving_and_it_rejoins(fleet: Fleet) -> None:
    lost = "h3"
    on_lost = [s for s in fleet.deployment.specs if s.host == lost and not s.one_shot]
    observer = next(s for s in fleet.deployment.of_role("consul-agent") if s.host == "h2")
    masters = fleet.deployment.of_role("redis")
    lost_master = next(m for m in masters if m.host == lost)
    redis_observer = next(m for m in masters if m.host == "h1")
    lost_redis = f"{fleet.config.host(lost).address}:{REDIS_PORT}"
    pg_lost = next(m for m in fleet.pg_members() if m.host == lost)
    await asyncio.to_thread(fleet.lead_postgres_as_planned)  # h3 holds the standby
    assert fleet.pg_role(pg_lost) == "replica"
    assert role_of(fleet, redis_observer, lost_redis) == "master"

    started = time.monotonic()
    load = asyncio.create_task(text_load("host-h3-stop", fleet.gateway_url, fleet.api_key,
                                         fleet.ca_file, total=LOAD_TURNS,
                                         duration_s=LOAD_S))  # fmt: skip
    await asyncio.sleep(STOP_AT_S)
    issued = time.monotonic()
    try:
        await asyncio.to_thread(_lab_docker, "stop", container_name(lost))
        gone = time.monotonic()
        leader_s, redis_s = await _fleet_without(fleet, lost, observer, redis_observer,
                                                 lost_redis, gone)  # fmt: skip
        await asyncio.sleep(max(0.0, gone + BACK_AFTER_S - time.monotonic()))
    except BaseException:
        load.cancel()
        raise
    finally:  # the host comes back whatever happened: the next scenarios need it
        await asyncio.to_thread(_lab_docker, "start", container_name(lost))
    back = time.monotonic()
    report = await load

    def host_up() -> None:  # its daemon answers (the lab host's own health check)
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}",
                                container_name(lost)], capture_output=True, text=True,
                               timeout=60, check=True).stdout.strip()  # fmt: skip
        if state != "healthy":
            raise NotYet(state)

    await asyncio.to_thread(poll, host_up, what=f"{lost}'s daemon", timeout=120, interval=1)
    for spec in on_lost:  # every service on h3 up again by itself
        await asyncio.to_thread(fleet.wait_healthy, spec, 300)
    healthy_s = time.monotonic() - back
    await asyncio.to_thread(wait_tolerant, fleet, observer)

    def rejoined() -> None:
        if (role := role_of(fleet, redis_observer, lost_redis)) != "slave":
            raise NotYet(role)
        state = fleet.psql("SELECT application_name, state, sync_state FROM pg_stat_replication")
        if state != f"{lost}|streaming|sync":
            raise NotYet(state)

    await asyncio.to_thread(poll, rejoined, what="h3's Redis and PostgreSQL members rejoined",
                            timeout=180, interval=1)  # fmt: skip
    rejoined_s = time.monotonic() - back
    stop_s, gone_s = issued - started, gone - started
    print(report.summary(stop_s), f"; {lost} stopped at {stop_s:.0f} s (gone after"
          f" {gone - issued:.1f} s): Consul led without it {leader_s:.1f} s later, its Redis"
          f" master replaced after {redis_s:.1f} s; started again {BACK_AFTER_S:.0f} s later:"
          f" every service healthy after {healthy_s:.0f} s, Redis and PostgreSQL members"
          f" rejoined after {rejoined_s:.0f} s")  # fmt: skip

    # Take the plan's placement back: h3's Redis node is the master of its slots again.
    await asyncio.to_thread(cluster, fleet, lost_master, "cluster", "failover")

    def master_again() -> None:
        if (role := role_of(fleet, redis_observer, lost_redis)) != "master":
            raise NotYet(role)

    await asyncio.to_thread(poll, master_again, what="h3's Redis node master again",
                            timeout=60, interval=1)  # fmt: skip
    for a in report.failed:
        assert stop_s - 1.0 <= a.sent_s <= gone_s + GATEWAY_OUT_S, a
    assert [a for a in report.answers if a.sent_s > gone_s + GATEWAY_OUT_S], "no turn after"
    assert_nothing_lost(fleet, report)
