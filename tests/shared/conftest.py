"""Fixtures of the service-fabric tests."""

from __future__ import annotations

import pytest
from morgan.shared.consul_client import ConsulClientFactory

from tests.harness.servers import ConsulServer


@pytest.fixture
def consul(consul_server: ConsulServer) -> ConsulClientFactory:
    """A client factory for the session's real Consul agent."""
    return ConsulClientFactory.from_env(consul_server.addr)
