"""ConsulServiceDiscovery against a real Consul agent with real HTTP health targets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.discovery import ConsulServiceDiscovery, NoHealthyInstanceError
from morgan.shared.registry import ConsulRegistry

from tests.harness.ports import LOOPBACK
from tests.harness.servers import ConsulServer
from tests.harness.upstream import StaticHttpServer
from tests.shared.helpers import aeventually, unique_name

pytestmark = pytest.mark.integration


async def register(
    factory: ConsulClientFactory, name: str, target: StaticHttpServer, interval: str = "1s"
) -> ConsulRegistry:
    reg = ConsulRegistry(
        factory,
        name=name,
        host=LOOPBACK,
        port=target.port,
        check_interval=interval,
        meta={"version": "t"},
    )
    await reg.register()
    return reg


async def ids(d: ConsulServiceDiscovery, name: str) -> set[str]:
    try:
        return {e.id for e in await d.discover(name)}
    except NoHealthyInstanceError:
        return set()


async def test_discover_returns_only_passing_and_drops_failing_within_15s(
    consul: ConsulClientFactory,
) -> None:
    name = unique_name()
    with StaticHttpServer(b"ok") as good, StaticHttpServer(b"ok") as flaky:
        regs = [await register(consul, name, good), await register(consul, name, flaky)]
        d = ConsulServiceDiscovery(consul, cache_seconds=30, watch_wait_seconds=2)
        try:
            both = {r.service_id for r in regs}
            await aeventually(lambda: _eq(ids(d, name), both), timeout=15, what="two passing")
            flaky.status = 500  # its /health now fails
            # cache_seconds is 30: only the blocking-query watch can make this quick.
            await aeventually(
                lambda: _eq(ids(d, name), {regs[0].service_id}),
                timeout=15,
                what="the failing instance to disappear",
            )
            eps = await d.discover(name)
            assert eps[0].url == f"http://{LOOPBACK}:{good.port}"
            assert eps[0].meta["version"] == "t"
        finally:
            d.close()
            for r in regs:
                await r.deregister()


async def _eq(coro, expected):  # type: ignore[no-untyped-def]
    got = await coro
    return got == expected


async def test_watch_sees_a_new_instance_quickly(consul: ConsulClientFactory) -> None:
    name = unique_name()
    with StaticHttpServer(b"ok") as a, StaticHttpServer(b"ok") as b:
        r1 = await register(consul, name, a)
        d = ConsulServiceDiscovery(consul, cache_seconds=300, watch_wait_seconds=2)
        try:
            await aeventually(lambda: ids(d, name), timeout=15, what="first instance")
            r2 = await register(consul, name, b)
            loop = asyncio.get_running_loop()
            start = loop.time()
            await aeventually(
                lambda: _eq(ids(d, name), {r1.service_id, r2.service_id}),
                timeout=15,
                what="the watch to add the second instance",
            )
            # With a 300 s cache, only the watch can have refreshed it.
            assert loop.time() - start < 15
            await r2.deregister()
        finally:
            d.close()
            await r1.deregister()


async def test_unknown_service_is_a_clear_error(consul: ConsulClientFactory) -> None:
    d = ConsulServiceDiscovery(consul, watch=False, caller="morgan-core")
    with pytest.raises(
        NoHealthyInstanceError,
        match=r"core: no healthy instance of morgan-nothing-here in Consul; "
        r"is the nothing-here host up",
    ):
        await d.discover("morgan-nothing-here")


@pytest.mark.slow
async def test_consul_down_serves_stale_endpoints_then_fails_clearly(tmp_path: Path) -> None:
    now = [0.0]
    with ConsulServer.run(tmp_path) as server, StaticHttpServer(b"ok") as target:
        factory = ConsulClientFactory.from_env(server.addr)
        name = unique_name("morgan-llm")
        reg = await register(factory, name, target)
        d = ConsulServiceDiscovery(
            factory, cache_seconds=30, stale_max_seconds=120, watch=False, clock=lambda: now[0]
        )
        await aeventually(lambda: ids(d, name), timeout=15, what="a passing instance")
        server.stop()
        now[0] += 60  # cache expired, Consul gone: stale endpoints for up to 120 s
        assert {e.id for e in await d.discover(name)} == {reg.service_id}
        now[0] += 120  # last seen 180 s ago: past the window
        with pytest.raises(NoHealthyInstanceError) as info:
            await d.discover(name)
        msg = str(info.value)
        assert f"no healthy instance of {name} in Consul (last seen 3 min ago" in msg
        assert "host up" in msg


async def test_with_internal_tls_a_plaintext_instance_is_refused(
    consul: ConsulClientFactory,
) -> None:
    """Someone on the LAN registers a plain-HTTP `morgan-core` next to the real (https) one:
    a service with internal TLS on never sends it a request."""
    name = unique_name()
    agent = consul.client().agent
    agent.service.register(name, service_id=f"{name}-real", address=LOOPBACK, port=9443,
                           meta={"scheme": "https"})  # fmt: skip
    agent.service.register(name, service_id=f"{name}-fake", address=LOOPBACK, port=9080)
    tls_on = ConsulServiceDiscovery(consul, watch=False, require_tls=True, caller="morgan-core")
    tls_off = ConsulServiceDiscovery(consul, watch=False)
    try:
        assert await ids(tls_off, name) == {f"{name}-real", f"{name}-fake"}
        found = await tls_on.discover(name)
        assert [e.id for e in found] == [f"{name}-real"]
        assert found[0].url == f"https://{LOOPBACK}:9443"
        agent.service.deregister(f"{name}-real")
        tls_on.invalidate(name)
        with pytest.raises(NoHealthyInstanceError, match=rf"refused {name}-fake: registered as "
                           "plain HTTP while internal TLS is on"):  # fmt: skip
            await tls_on.discover(name)
    finally:
        agent.service.deregister(f"{name}-real")
        agent.service.deregister(f"{name}-fake")
        tls_on.close()
        tls_off.close()
