"""Discovery logic that needs no server: parsing Consul's answer, EWMA round-robin."""

from __future__ import annotations

import pytest
from morgan.shared.discovery import (
    ConsulServiceDiscovery,
    NoHealthyInstanceError,
    ServiceEndpoint,
    endpoints_from_health,
)

pytestmark = pytest.mark.unit


def entry(sid: str, port: int, statuses: list[str], **meta: str) -> dict:
    return {
        "Node": {"Address": "10.0.0.9"},
        "Service": {
            "ID": sid,
            "Address": "127.0.0.1",
            "Port": port,
            "Tags": ["morgan"],
            "Meta": meta,
        },
        "Checks": [{"Status": s} for s in statuses],
    }


def test_only_all_passing_entries_become_endpoints() -> None:
    eps = endpoints_from_health(
        "morgan-llm",
        [
            entry("b", 2, ["passing", "passing"]),
            entry("a", 1, ["passing"]),
            entry("c", 3, ["passing", "critical"]),
            entry("d", 4, ["warning"]),
        ],
    )
    assert [e.id for e in eps] == ["a", "b"]
    assert eps[0].url == "http://127.0.0.1:1"


def test_https_meta_gives_https_url() -> None:
    eps = endpoints_from_health("s", [entry("a", 8443, ["passing"], scheme="https")])
    assert eps[0].url == "https://127.0.0.1:8443"


def test_round_robin_without_latency_data() -> None:
    d = ConsulServiceDiscovery("127.0.0.1:1", watch=False)
    eps = [ServiceEndpoint("s", f"s-{i}", "127.0.0.1", i) for i in range(3)]
    picked = [d.select("s", eps).id for _ in range(6)]
    assert picked == ["s-0", "s-1", "s-2", "s-0", "s-1", "s-2"]


def test_slow_instance_is_avoided_while_fast_ones_share_the_load() -> None:
    d = ConsulServiceDiscovery("127.0.0.1:1", watch=False)
    eps = [ServiceEndpoint("s", f"s-{i}", "127.0.0.1", i) for i in range(3)]
    d.record_latency(eps[0], 0.010)
    d.record_latency(eps[1], 0.012)
    d.record_latency(eps[2], 0.500)
    picked = {d.select("s", eps).id for _ in range(10)}
    assert picked == {"s-0", "s-1"}


def test_ewma_moves_towards_new_observations() -> None:
    d = ConsulServiceDiscovery("127.0.0.1:1", watch=False)
    ep = ServiceEndpoint("s", "s-0", "127.0.0.1", 1)
    d.record_latency(ep, 1.0)
    d.record_latency(ep, 0.0)
    assert d.latency(ep) == pytest.approx(0.7)


def test_failure_penalty_pushes_instance_out_of_rotation() -> None:
    d = ConsulServiceDiscovery("127.0.0.1:1", watch=False)
    eps = [ServiceEndpoint("s", f"s-{i}", "127.0.0.1", i) for i in range(2)]
    d.record_latency(eps[0], 0.01)
    d.record_latency(eps[1], 0.01)
    d.record_failure(eps[1])
    assert {d.select("s", eps).id for _ in range(4)} == {"s-0"}


def test_exclude_prefers_untried_instances() -> None:
    d = ConsulServiceDiscovery("127.0.0.1:1", watch=False)
    eps = [ServiceEndpoint("s", f"s-{i}", "127.0.0.1", i) for i in range(2)]
    assert d.select("s", eps, exclude=frozenset({"s-0"})).id == "s-1"
    # Everything tried: fall back to the whole pool rather than fail.
    assert d.select("s", eps, exclude=frozenset({"s-0", "s-1"})).id in {"s-0", "s-1"}


def test_select_with_no_endpoints_is_a_clear_error() -> None:
    d = ConsulServiceDiscovery("127.0.0.1:1", watch=False)
    with pytest.raises(NoHealthyInstanceError, match="no healthy instance of morgan-llm"):
        d.select("morgan-llm", [])


async def test_unreachable_consul_without_cache_names_the_fix() -> None:
    from tests.harness.ports import free_port

    d = ConsulServiceDiscovery(f"127.0.0.1:{free_port()}", watch=False, caller="morgan-core")
    with pytest.raises(NoHealthyInstanceError) as info:
        await d.discover("morgan-llm")
    msg = str(info.value)
    assert msg.startswith("core: cannot look up morgan-llm")
    assert "CONSUL_HTTP_ADDR" in msg
