"""Retry schedule of MorganHTTPClient, checked with a fake clock against refused loopback ports."""

from __future__ import annotations

import pytest
from morgan.shared.discovery import ConsulServiceDiscovery
from morgan.shared.http_client import MorganHTTPClient, UpstreamError, backoff_delay

from tests.harness.ports import free_ports
from tests.shared.helpers import seed_endpoints

pytestmark = pytest.mark.unit


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(
    fake: FakeTime, *, rng: float = 1.0, deadline: float = 60.0, base: float = 0.1, cap: float = 2.0
) -> tuple[MorganHTTPClient, list[int]]:
    discovery = ConsulServiceDiscovery("127.0.0.1:1", watch=False, clock=fake.clock)
    ports = free_ports(3)  # nothing listens: every connect is refused
    seed_endpoints(discovery, "morgan-x", ports)
    client = MorganHTTPClient(
        discovery,
        deadline=deadline,
        clock=fake.clock,
        sleep=fake.sleep,
        rng=lambda: rng,
        backoff_base=base,
        backoff_cap=cap,
        timeout=2,
    )
    return client, ports


def test_full_jitter_delay_bounds() -> None:
    assert backoff_delay(0, 0.1, 2.0, lambda: 1.0) == pytest.approx(0.1)
    assert backoff_delay(3, 0.1, 2.0, lambda: 1.0) == pytest.approx(0.8)
    assert backoff_delay(10, 0.1, 2.0, lambda: 1.0) == pytest.approx(2.0)
    assert backoff_delay(10, 0.1, 2.0, lambda: 0.25) == pytest.approx(0.5)
    assert backoff_delay(2, 0.1, 2.0, lambda: 0.0) == 0.0


async def test_five_attempts_with_exponential_backoff_then_error() -> None:
    fake = FakeTime()
    client, _ = make_client(fake)
    with pytest.raises(UpstreamError, match="could not reach any instance of morgan-x"):
        await client.request("morgan-x", "GET", "/health")
    await client.aclose()
    assert fake.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8])


async def test_backoff_is_capped() -> None:
    fake = FakeTime()
    client, _ = make_client(fake, base=1.0, cap=2.0)
    with pytest.raises(UpstreamError):
        await client.request("morgan-x", "GET", "/")
    await client.aclose()
    assert fake.sleeps == pytest.approx([1.0, 2.0, 2.0, 2.0])


async def test_jitter_scales_the_delay() -> None:
    fake = FakeTime()
    client, _ = make_client(fake, rng=0.5)
    with pytest.raises(UpstreamError):
        await client.request("morgan-x", "GET", "/")
    await client.aclose()
    assert fake.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4])


async def test_deadline_stops_retries_early() -> None:
    fake = FakeTime()
    client, _ = make_client(fake, base=1.0, cap=2.0, deadline=2.5)
    with pytest.raises(UpstreamError):
        await client.request("morgan-x", "GET", "/")
    await client.aclose()
    # 1 s then 2 s would pass the 2.5 s deadline: only the first backoff is slept.
    assert fake.sleeps == pytest.approx([1.0])


async def test_connect_refused_post_is_retried_because_it_was_never_sent() -> None:
    fake = FakeTime()
    client, _ = make_client(fake)
    with pytest.raises(UpstreamError):
        await client.request("morgan-x", "POST", "/api/text", json={"a": 1})
    await client.aclose()
    assert len(fake.sleeps) == 4


async def test_failover_tries_each_instance_before_repeating() -> None:
    fake = FakeTime()
    client, _ = make_client(fake)
    tried: list[str] = []
    original = client.discovery.pick

    async def spy(name: str, exclude: frozenset[str] = frozenset()):  # type: ignore[no-untyped-def]
        ep = await original(name, exclude)
        tried.append(ep.id)
        return ep

    client.discovery.pick = spy  # type: ignore[method-assign]
    with pytest.raises(UpstreamError):
        await client.request("morgan-x", "GET", "/")
    await client.aclose()
    assert len(set(tried[:3])) == 3
    assert len(tried) == 5
