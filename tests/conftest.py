"""Session-wide fixtures: real servers on free loopback ports.

Each fixture is lazy (a server starts only when a test asks for it), lives in
its own pytest temp dir (config, data, <name>.log) and is always stopped at the
end of the session. Tests that stop or break a server start their own with
`with ConsulServer.run(tmp_path) as consul:` instead of touching these.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.servers import (
    ConsulServer,
    PostgresServer,
    PrometheusServer,
    RedisCluster,
    RedisServer,
    TraefikServer,
)


@pytest.fixture(scope="session")
def consul_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulServer]:
    with ConsulServer.run(tmp_path_factory.mktemp("consul")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer.run(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer.run(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster.run(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def traefik_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TraefikServer]:
    with TraefikServer.run(tmp_path_factory.mktemp("traefik")) as server:
        yield server


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with PrometheusServer.run(tmp_path_factory.mktemp("prometheus")) as server:
        yield server
