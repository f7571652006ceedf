"""Consul names in connection settings, expanded through a real Consul's catalogue."""

from __future__ import annotations

import pytest
from morgan.shared import consul_names
from morgan.shared.consul_client import ConsulClientFactory

pytestmark = pytest.mark.integration


def test_names_become_every_passing_instance(consul: ConsulClientFactory) -> None:
    client = consul.client()
    client.agent.service.register("pgx", service_id="pgx-a", address="10.0.0.1", port=5432)
    client.agent.service.register("pgx", service_id="pgx-b", address="10.0.0.2", port=5433)
    client.agent.service.register("rdx", service_id="rdx-a", address="10.0.0.3", port=6379)
    try:
        lookup = consul_names.catalog_instances(consul)
        dsn = "postgresql://u:p@pgx.service.consul:5432/db?sslmode=verify-full"
        assert consul_names.expand(dsn, lookup) == (
            "postgresql://u:p@10.0.0.1:5432,10.0.0.2:5433/db?sslmode=verify-full"
        )
        nodes = consul_names.expand_nodes(["rdx.service.consul:6379", "10.9.9.9:7000"], lookup)
        assert nodes == ["10.0.0.3:6379", "10.9.9.9:7000"]
    finally:
        for sid in ("pgx-a", "pgx-b", "rdx-a"):
            client.agent.service.deregister(sid)


def test_a_name_without_instance_names_the_service(consul: ConsulClientFactory) -> None:
    lookup = consul_names.catalog_instances(consul)
    with pytest.raises(consul_names.ConsulNameError, match=r"'nothere'.*consul catalog"):
        consul_names.expand("postgresql://u@nothere.service.consul:5432/db", lookup)


@pytest.mark.unit
def test_plain_addresses_are_left_alone() -> None:
    def never(name: str) -> list[tuple[str, int]]:
        raise AssertionError(f"looked up {name}")

    value = "postgresql://u:p@127.0.0.1:5432,db.lan:5432/morgan"
    assert not consul_names.has_names(value)
    assert consul_names.expand(value, never) == value
