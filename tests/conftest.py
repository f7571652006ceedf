"""Session-wide fixtures: real servers on free loopback ports.

Each fixture is lazy (a server starts only when a test asks for it), lives in
its own pytest temp dir (config, data, <name>.log) and is always stopped at the
end of the session. Tests that stop or break a server start their own with
`with ConsulServer.run(tmp_path) as consul:` instead of touching these.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from morgan.cli.lab_cmd import build_lab_images
from morgan.deploy.rollout import DeployReport
from morgan.lab import hosts as lab
from morgan.lab import images as img

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


# -- the multi-host lab: brought up once per run (if a test asks), removed at the end --


@pytest.fixture(scope="session")
def lab_paths() -> lab.LabPaths:
    return lab.LabPaths(img.repo_root() / ".morgan" / "lab")


@pytest.fixture(scope="session")
def lab_hosts(lab_paths: lab.LabPaths) -> Iterator[list[lab.LabHost]]:
    try:
        yield lab.up(lab_paths, 4, *build_lab_images())
    finally:
        lab.down(lab_paths)


@pytest.fixture(scope="session")
def lab_fleet(lab_hosts: list[lab.LabHost]) -> DeployReport:
    """stacks/Pulumi.lab.yaml deployed onto the lab's hosts once (`morgan deploy --stack lab`).

    Removed with the lab (its containers and volumes live in the hosts' daemons).
    """
    from morgan.cli.stack_cmd import build_images
    from morgan.deploy.rollout import deploy
    from morgan.lab import stack as st

    root = img.repo_root()
    build_images("lab", root)
    return deploy(st.load_config("lab", root), root, st.paths("lab", root), log=print)


def _lab_order(item: pytest.Item) -> int:
    name = item.module.__name__ if item.module is not None else ""
    if name.endswith("test_swarm"):
        return 2
    return 1 if ".chaos." in name else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On the one lab of a run: the chaos tests after the fleet's own (they break it on
    purpose and mend it), the Swarm tests last (they turn the fleet over to Swarm)."""
    items.sort(key=_lab_order)
