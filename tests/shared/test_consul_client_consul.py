"""ConsulClientFactory against a real Consul with ACLs (default deny): the address and token
the factory holds are the ones used, whatever CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN say."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest
from morgan.shared.consul_client import ConsulClientFactory, until_answered

from tests.harness.servers import ConsulServer

pytestmark = pytest.mark.integration

MANAGEMENT_TOKEN = str(uuid.uuid4())


@pytest.fixture(scope="module")
def acl_consul(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulServer]:
    acl = (
        'acl { enabled = true default_policy = "deny" '
        f'tokens {{ initial_management = "{MANAGEMENT_TOKEN}" }} }}'
    )
    with ConsulServer.run(tmp_path_factory.mktemp("consul-acl"), extra_args=["-hcl", acl]) as s:
        yield s


def test_factory_token_wins_over_the_environment(
    acl_consul: ConsulServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", str(uuid.uuid4()))  # a token Consul does not know
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:1")  # nothing listens there
    factory = ConsulClientFactory(host=acl_consul.host, port=acl_consul.port,
                                  token=MANAGEMENT_TOKEN)  # fmt: skip
    client = factory.client()
    assert client.kv.put("morgan/test/token", "kept") is True
    _, entry = client.kv.get("morgan/test/token")
    assert entry is not None and entry["Value"] == b"kept"


def test_without_a_token_acls_refuse(
    acl_consul: ConsulServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    client = ConsulClientFactory(host=acl_consul.host, port=acl_consul.port).client()
    with pytest.raises(consul.ACLPermissionDenied):
        client.kv.put("morgan/test/anonymous", "refused")


def test_until_answered_retries_then_returns(tmp_path: Path) -> None:
    """A Consul that starts late: the query fails (connection refused) until it is up."""
    server = ConsulServer(tmp_path)
    client = ConsulClientFactory(host=server.host, port=server.port, timeout=2).client()
    stop = threading.Event()
    starter = threading.Timer(1.5, server.start)
    t0 = time.monotonic()
    starter.start()

    def leader() -> str:
        address = str(client.status.leader())
        if not address:  # the agent answers before it has elected itself
            raise RuntimeError("no leader yet")
        return address

    try:
        answer = until_answered(leader, stop, "leader")
        waited = time.monotonic() - t0
    finally:
        starter.join()
        server.stop()
    assert answer is not None and answer.endswith(f":{server.server_port}")
    assert waited >= 1.5


def test_until_answered_returns_none_once_stopped() -> None:
    stop = threading.Event()
    calls: list[float] = []

    def refused() -> str:
        calls.append(time.monotonic())
        if len(calls) == 3:
            stop.set()
        raise ConnectionRefusedError("nothing listens")

    assert until_answered(refused, stop, "stopped watch") is None
    assert len(calls) == 3
    # the pauses grow: at least 0.5 s, then at least 1 s
    assert calls[1] - calls[0] >= 0.45
    assert calls[2] - calls[1] >= 0.95
