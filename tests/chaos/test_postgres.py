"""The PostgreSQL primary killed under load: Patroni promotes the standby once the
leader key's TTL runs out, core's connections find the new primary by themselves
(target_session_attrs=read-write over both members), and not one acknowledged turn is
lost (synchronous replication: a turn is acknowledged only once both members have it).
The old primary, started again, rejoins as a replica; then the plan's placement is
taken back (a switchover, when the plan's primary is not the one leading)."""

from __future__ import annotations

import asyncio
import time

import pytest

from infra.configs.patroni import DCS_TIMING
from tests.chaos.conftest import Fleet
from tests.chaos.load import text_load
from tests.chaos.test_core_replicas import assert_nothing_lost

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.asyncio(loop_scope="session")]  # fmt: skip

# A turn that needs PostgreSQL while no member is primary ends 503 + Retry-After (core
# never answers a turn it could not store). Those may come from the kill until a few
# seconds after the promotion (core's pool reconnects on its next statement).
AFTER_PROMOTION_S = 10.0


async def test_killing_the_postgres_primary_loses_no_acknowledged_turn(fleet: Fleet) -> None:
    members = fleet.pg_members()
    roles = {m.host: fleet.pg_role(m) for m in members}
    assert sorted(roles.values()) == ["primary", "replica"], roles
    victim = next(m for m in members if roles[m.host] == "primary")
    heir = next(m for m in members if m is not victim)
    load = asyncio.create_task(text_load("postgres-primary-kill", fleet.gateway_url,
                                         fleet.api_key, fleet.ca_file, total=160,
                                         duration_s=80))  # fmt: skip
    await asyncio.sleep(10)
    fault = time.monotonic()
    try:
        await asyncio.to_thread(fleet.engine(victim).run, "kill", victim.name)
        await asyncio.to_thread(fleet.wait_pg_role, heir, "primary", f"{heir.host} promoted")
        promoted = time.monotonic() - fault
        await asyncio.to_thread(fleet.engine(victim).run, "start", victim.name)
        await asyncio.to_thread(fleet.wait_healthy, victim)
        await asyncio.to_thread(fleet.wait_pg_role, victim, "replica",
                                f"{victim.host} a replica")  # fmt: skip
        rejoined = time.monotonic() - fault
        report = await load
    finally:
        # The plan's placement back, whatever happened above: the tests after this one
        # (and `morgan verify`) expect the plan's primary to lead with a sync standby.
        await asyncio.to_thread(fleet.lead_postgres_as_planned)
    print(report.summary(10.0), f"; {heir.host} promoted {promoted:.1f} s after the kill"
          f" (Patroni ttl {DCS_TIMING['ttl']} s, loop_wait {DCS_TIMING['loop_wait']} s),"
          f" {victim.host} a replica again after {rejoined:.0f} s")  # fmt: skip

    assert_nothing_lost(fleet, report)
    window = (10.0 - 1.0, 10.0 + promoted + AFTER_PROMOTION_S)
    for a in report.failed:
        assert (a.status, a.kind) == (503, "storage unavailable"), report.why_failed(10.0)
        assert window[0] <= a.sent_s + a.seconds <= window[1], (a, window, report.summary(10.0))
    answered_after = [a for a in report.answers if a.sent_s > window[1]]
    assert answered_after and all(a.status == 200 for a in answered_after)
