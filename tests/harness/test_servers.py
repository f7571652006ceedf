"""The harness starts real, usable servers and always cleans them up."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import consul
import pytest
import redis
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as RedisClusterClient

from tests.harness.binaries import find_binary
from tests.harness.errors import BinaryNotFoundError, ServerStartError
from tests.harness.http_client import http_request
from tests.harness.ports import free_ports, port_is_free
from tests.harness.servers import (
    ConsulServer,
    PostgresServer,
    PrometheusServer,
    RedisCluster,
    RedisServer,
    TraefikServer,
    remove_stale_postgres_dirs,
)
from tests.harness.upstream import StaticHttpServer

T = TypeVar("T")


def eventually(check: Callable[[], T | None], *, timeout: float = 15.0, what: str) -> T:
    """Poll check() until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as error:
            last_error = error
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last error: {last_error!r}")


def process_group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------- unit


@pytest.mark.unit
def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert all(port_is_free(port) for port in ports)
    assert not set(ports) & set(free_ports(8)), "a port was handed out twice"


@pytest.mark.unit
def test_free_ports_with_offset_leaves_the_bus_port_free() -> None:
    for port in free_ports(3, also_free_at_offset=10000):
        assert port + 10000 <= 65535
        assert port_is_free(port + 10000)


@pytest.mark.unit
def test_missing_binary_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("MORGAN_CONSUL_BIN", raising=False)
    with pytest.raises(BinaryNotFoundError) as caught:
        ConsulServer(tmp_path)
    assert str(caught.value).startswith(
        "consul not found on PATH; run scripts/setup (it builds consul 1.16.1)"
    )


@pytest.mark.unit
def test_binary_override_must_be_executable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MORGAN_REDIS_SERVER_BIN", str(tmp_path / "nope"))
    with pytest.raises(BinaryNotFoundError, match=r"MORGAN_REDIS_SERVER_BIN=.*not an executable"):
        find_binary("redis-server")


@pytest.mark.unit
def test_only_old_dead_postgres_dirs_are_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old, young, running = (tmp_path / f"morgan-pg-{n}" for n in ("old", "young", "running"))
    for root in (old, young, running):
        (root / "data").mkdir(parents=True)
    (running / "data" / "postmaster.pid").write_text(f"{os.getpid()}\n")
    two_hours_ago = time.time() - 7200
    for root in (old, running):
        os.utime(root, (two_hours_ago, two_hours_ago))
    remove_stale_postgres_dirs()
    assert not old.exists()
    assert young.exists()
    assert running.exists()


# ------------------------------------------------------------- integration


@pytest.mark.integration
def test_consul_registers_a_service_with_a_passing_http_check(
    consul_server: ConsulServer,
) -> None:
    client = consul.Consul(host=consul_server.host, port=consul_server.port)
    name = f"harness-probe-{uuid.uuid4().hex[:8]}"
    with StaticHttpServer(b"ok") as upstream:
        assert client.agent.service.register(
            name,
            service_id=f"{name}-1",
            address=upstream.host,
            port=upstream.port,
            tags=["harness"],
            check=consul.Check.http(f"{upstream.url}/health", interval="1s", timeout="1s"),
        )
        try:

            def passing() -> list[dict[str, object]] | None:
                status, body = http_request(
                    f"{consul_server.url}/v1/health/service/{name}?passing=true"
                )
                assert status == 200
                entries: list[dict[str, object]] = json.loads(body)
                return entries or None

            entries = eventually(passing, what=f"{name} to pass its HTTP check")
            service = entries[0]["Service"]
            assert isinstance(service, dict)
            assert service["ID"] == f"{name}-1"
            assert service["Port"] == upstream.port
            assert service["Tags"] == ["harness"]
            _, nodes = client.health.service(name, passing=True)
            assert [n["Service"]["ID"] for n in nodes] == [f"{name}-1"]
            assert "/health" in upstream.paths
        finally:
            client.agent.service.deregister(f"{name}-1")
    _, nodes = client.health.service(name)
    assert nodes == []


@pytest.mark.integration
def test_consul_kv_put_and_get(consul_server: ConsulServer) -> None:
    client = consul.Consul(host=consul_server.host, port=consul_server.port)
    key = f"harness/{uuid.uuid4().hex}"
    assert client.kv.put(key, "value-1")
    _, entry = client.kv.get(key)
    assert entry is not None
    assert entry["Value"] == b"value-1"
    _, missing = client.kv.get(f"{key}-absent")
    assert missing is None


@pytest.mark.integration
async def test_postgres_table_round_trip(postgres_server: PostgresServer) -> None:
    assert postgres_server.dsn.startswith(
        f"postgresql://morgan:{postgres_server.password}@127.0.0.1:{postgres_server.port}/morgan"
    )
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        table = f"harness_{uuid.uuid4().hex[:8]}"
        await conn.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, text text NOT NULL)")
        await conn.executemany(f"INSERT INTO {table} (text) VALUES ($1)", [("a",), ("b",)])
        rows = await conn.fetch(f"SELECT id, text FROM {table} ORDER BY id")
        assert [(r["id"], r["text"]) for r in rows] == [(1, "a"), (2, "b")]
        assert await conn.fetchval("SELECT current_user") == "morgan"
        await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()


@pytest.mark.integration
async def test_postgres_rejects_a_wrong_password(postgres_server: PostgresServer) -> None:
    bad = postgres_server.dsn.replace(postgres_server.password, "wrong-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(bad)


@pytest.mark.integration
def test_redis_set_and_get(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        key = f"harness:{uuid.uuid4().hex}"
        assert client.set(key, "v", ex=60)
        assert client.get(key) == b"v"
        assert client.get(f"{key}:absent") is None
    finally:
        client.close()


@pytest.mark.integration
def test_redis_cluster_serves_keys_from_every_master(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.startup_nodes) == 3
    client = RedisClusterClient(
        startup_nodes=[ClusterNode(host, port) for host, port in redis_cluster.startup_nodes]
    )
    try:
        owner_of: dict[int, str] = {}
        for i in range(1000):
            key = f"harness:{i}"
            port = int(client.get_node_from_key(key).port)
            if port not in owner_of:
                owner_of[port] = key
            if len(owner_of) == 3:
                break
        assert sorted(owner_of) == sorted(port for _, port in redis_cluster.startup_nodes)
        for port, key in owner_of.items():
            assert client.set(key, f"on-{port}")
            assert client.get(key) == f"on-{port}".encode()
            # The value really lives on that master: a direct connection serves it.
            direct = redis.Redis(host="127.0.0.1", port=port)
            try:
                assert direct.get(key) == f"on-{port}".encode()
            finally:
                direct.close()
    finally:
        client.close()


@pytest.mark.integration
def test_traefik_routes_to_an_upstream_from_the_file_provider(
    traefik_server: TraefikServer,
) -> None:
    probe = uuid.uuid4().hex[:10]
    body = f"upstream {probe}".encode()
    with StaticHttpServer(body) as upstream:
        traefik_server.write_dynamic_config(
            f"probe-{probe}",
            {
                "http": {
                    "routers": {
                        f"probe-{probe}": {
                            "rule": f"PathPrefix(`/probe-{probe}`)",
                            "entryPoints": ["web"],
                            "service": f"probe-{probe}",
                        }
                    },
                    "services": {
                        f"probe-{probe}": {"loadBalancer": {"servers": [{"url": upstream.url}]}}
                    },
                }
            },
        )
        try:

            def routed() -> bytes | None:
                status, answer = http_request(f"{traefik_server.url}/probe-{probe}/hello")
                return answer if status == 200 else None

            assert eventually(routed, what="traefik to route the probe") == body
            assert f"/probe-{probe}/hello" in upstream.paths
            names = [router["name"] for router in traefik_server.routers()]
            assert f"probe-{probe}@file" in names
        finally:
            traefik_server.remove_dynamic_config(f"probe-{probe}")
    status, _ = eventually(
        lambda: (lambda r: r if r[0] == 404 else None)(
            http_request(f"{traefik_server.url}/probe-{probe}/hello")
        ),
        what="traefik to drop the removed router",
    )
    assert status == 404


@pytest.mark.integration
def test_prometheus_scrapes_a_target(prometheus_server: PrometheusServer) -> None:
    probe = uuid.uuid4().hex[:10]
    metric = f"morgan_harness_probe_{probe}"
    value = int(probe[:6], 16)
    exposition = f"# TYPE {metric} gauge\n{metric} {value}\n".encode()
    previous = list(prometheus_server.scrape_configs)
    with StaticHttpServer(exposition, content_type="text/plain; version=0.0.4") as target:
        prometheus_server.add_scrape_config(
            {
                "job_name": f"probe-{probe}",
                "scrape_interval": "1s",
                "static_configs": [{"targets": [f"{target.host}:{target.port}"]}],
            }
        )
        try:
            result = prometheus_server.wait_for_query(metric, timeout=20)
            assert result[0]["metric"]["job"] == f"probe-{probe}"
            assert float(result[0]["value"][1]) == value
            assert "/metrics" in target.paths
        finally:
            prometheus_server.set_scrape_configs(previous)


@pytest.mark.integration
def test_prometheus_reload_rejects_a_broken_config(prometheus_server: PrometheusServer) -> None:
    good = prometheus_server.config_path.read_text()
    try:
        prometheus_server.config_path.write_text("scrape_configs: [this is not a job\n")
        with pytest.raises(RuntimeError, match="rejected"):
            prometheus_server.reload()
    finally:
        prometheus_server.config_path.write_text(good)
        prometheus_server.reload()


@pytest.mark.integration
def test_consul_answers_again_after_restart(tmp_path: Path) -> None:
    with ConsulServer.run(tmp_path) as server:
        client = consul.Consul(host=server.host, port=server.port)
        assert client.kv.put("before", "1")
        pgid = server.pid
        assert pgid is not None
        server.stop()
        assert not process_group_exists(pgid)
        with pytest.raises(Exception):  # noqa: B017 - any connection error will do
            client.kv.get("before")
        server.start()
        assert client.kv.put("after", "2")
        assert client.kv.get("after")[1]["Value"] == b"2"
        # Dev mode keeps state in memory: the restart started from empty.
        assert client.kv.get("before")[1] is None


@pytest.mark.integration
async def test_postgres_keeps_its_data_across_restart(tmp_path: Path) -> None:
    with PostgresServer.run(tmp_path) as server:
        conn = await asyncpg.connect(server.dsn)
        await conn.execute("CREATE TABLE kept (v int)")
        await conn.execute("INSERT INTO kept VALUES (7)")
        await conn.close()
        port, pgid = server.port, server.pid
        assert pgid is not None
        server.stop()
        assert not process_group_exists(pgid)
        assert port_is_free(port)
        server.start()
        assert server.port == port
        conn = await asyncpg.connect(server.dsn)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == 7
        finally:
            await conn.close()
    assert not Path(server.data_dir).exists()


@pytest.mark.integration
def test_a_server_that_fails_to_start_reports_its_log(tmp_path: Path) -> None:
    with (
        pytest.raises(ServerStartError) as caught,
        RedisServer.run(tmp_path, extra_args=["--no-such-directive", "yes"]),
    ):
        pass
    message = str(caught.value)
    assert "redis exited with status" in message
    assert "no-such-directive" in message
    assert str(tmp_path / "redis.log") in message


@pytest.mark.integration
def test_close_leaves_no_process_behind(tmp_path: Path) -> None:
    with RedisServer.run(tmp_path) as server:
        pgid = server.pid
        assert pgid is not None
        assert process_group_exists(pgid)
        port = server.port
    assert not process_group_exists(pgid)
    assert port_is_free(port)
