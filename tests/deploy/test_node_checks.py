"""The rolling deploy's wait for a host's Consul checks (morgan.deploy.node_checks), on a
real Consul agent: a check that passed before must pass again before the next host's
turn, one that does not is named in the error."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import consul
import pytest
from morgan.deploy import node_checks
from morgan.deploy.engine import DeployError
from morgan.deploy.node_checks import (
    checks_before,
    healthy_servers,
    passing_checks,
    servers_before,
    wait_checks_back,
    wait_servers_healthy,
)

from tests.harness.servers import ConsulServer


@pytest.fixture
def client(consul_server: ConsulServer) -> consul.Consul:
    return consul.Consul(host=consul_server.host, port=consul_server.port)


@pytest.fixture
def check(client: consul.Consul) -> Iterator[str]:
    """A service with a TTL check, passing, on the agent."""
    name = f"rolling-{uuid.uuid4().hex[:8]}"
    client.agent.service.register(name, service_id=name, check=consul.Check.ttl("60s"))
    client.agent.check.ttl_pass(f"service:{name}")
    yield f"service:{name}"
    client.agent.service.deregister(name)


def test_the_deploy_waits_until_a_check_that_passed_passes_again(
    consul_server: ConsulServer, client: consul.Consul, check: str
) -> None:
    node = consul_server.node_name
    before = passing_checks(client, node)
    assert check in before
    client.agent.check.ttl_fail(check)  # as after its agent restarted
    assert check not in passing_checks(client, node)
    timer = threading.Timer(2.0, client.agent.check.ttl_pass, args=(check,))
    timer.start()
    started = time.monotonic()
    wait_checks_back(client, node, before)
    assert time.monotonic() - started >= 1.5, "it returned while the check still failed"
    timer.join()


def test_a_check_that_stays_critical_is_named(
    consul_server: ConsulServer, client: consul.Consul, check: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    node = consul_server.node_name
    before = passing_checks(client, node)
    client.agent.check.ttl_fail(check)
    monkeypatch.setattr(node_checks, "CHECKS_BACK_S", 2)
    with pytest.raises(DeployError) as err:
        wait_checks_back(client, node, before)
    assert check in str(err.value) and "morgan deploy" in str(err.value)


def test_a_consul_that_does_not_answer_is_not_waited_for() -> None:
    logged: list[str] = []
    silent = consul.Consul(host="127.0.0.1", port=1)
    assert checks_before(silent, "h1", logged.append) == set()
    assert len(logged) == 1 and logged[0].startswith("h1  its Consul checks could not be read")


def test_the_deploy_waits_for_as_many_healthy_servers_as_before(
    consul_server: ConsulServer, client: consul.Consul, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert healthy_servers(client) == [consul_server.node_name]
    assert servers_before(client, print) == 1
    wait_servers_healthy(client, 1)
    monkeypatch.setattr(node_checks, "CHECKS_BACK_S", 2)
    with pytest.raises(DeployError, match="1 of 2 servers healthy"):
        wait_servers_healthy(client, 2)
