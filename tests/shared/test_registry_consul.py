"""ConsulRegistry and create_app's lifespan against a real Consul agent."""

from __future__ import annotations

from pathlib import Path

import pytest
from morgan.shared.app import create_app
from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.registry import ConsulRegistry
from morgan.shared.settings import ServiceSettings

from tests.harness.ports import LOOPBACK, free_port
from tests.harness.servers import ConsulServer
from tests.shared.helpers import UvicornThread, eventually, unique_name

pytestmark = pytest.mark.integration


def health_entries(consul: ConsulClientFactory, name: str, passing: bool = False) -> list[dict]:
    _, entries = consul.client().health.service(name, passing=passing)
    return entries


def service_settings(consul_addr: str, name: str, port: int, **kw: object) -> ServiceSettings:
    return ServiceSettings(
        service_name=name,
        host=LOOPBACK,
        bind_host=LOOPBACK,
        port=port,
        consul_http_addr=consul_addr,
        consul_check_interval="1s",
        consul_anti_entropy_seconds=0.5,
        auth_enabled=False,
        engine="demo",
        vram_mb=512,
        **kw,
    )  # type: ignore[arg-type]


def test_app_registers_with_id_meta_and_http_check_then_deregisters(
    consul: ConsulClientFactory,
) -> None:
    name = unique_name()
    port = free_port()
    app = create_app(service_settings(consul.addr, name, port), meta={"model": "tiny"})
    sid = f"{name}-{LOOPBACK}-{port}"
    with UvicornThread(app, port=port):
        entries = eventually(
            lambda: health_entries(consul, name, passing=True),
            timeout=15,
            what="a passing registration",
        )
        svc = entries[0]["Service"]
        assert svc["ID"] == sid
        assert (svc["Address"], svc["Port"]) == (LOOPBACK, port)
        assert "morgan" in svc["Tags"]
        meta = svc["Meta"]
        assert meta["version"] and meta["engine"] == "demo" and meta["device"] == "cpu"
        assert meta["vram_mb"] == "512" and meta["arch"] and meta["os"] == "linux"
        assert meta["model"] == "tiny"
        checks = consul.client().agent.checks()
        check = next(c for c in checks.values() if c["ServiceID"] == sid)
        assert check["Status"] == "passing"
        assert (check["Type"], check["Interval"], check["Timeout"]) == ("http", "1s", "5s")
        assert f"http://{LOOPBACK}:{port}/health" in check["Output"]
    assert sid not in consul.client().agent.services()


def test_registry_defaults_match_the_contract() -> None:
    reg = ConsulRegistry(
        ConsulClientFactory.from_env("127.0.0.1:1"), name="morgan-llm", host="gpu1", port=8001
    )
    check = reg.check_definition()
    assert reg.service_id == "morgan-llm-gpu1-8001"
    assert check == {
        "http": "http://gpu1:8001/health",
        "interval": "10s",
        "timeout": "5s",
        "DeregisterCriticalServiceAfter": "1m",
    }


@pytest.mark.slow
def test_reregisters_after_consul_restart_forgets_it(tmp_path: Path) -> None:
    with ConsulServer.run(tmp_path) as server:
        factory = ConsulClientFactory.from_env(server.addr)
        name = unique_name()
        port = free_port()
        app = create_app(service_settings(server.addr, name, port))
        with UvicornThread(app, port=port):
            eventually(lambda: health_entries(factory, name), what="first registration")
            server.stop()
            server.start()  # dev mode: an empty catalog
            entries = eventually(
                lambda: health_entries(factory, name),
                timeout=15,
                what="re-registration after the restart",
            )
            assert entries[0]["Service"]["ID"] == f"{name}-{LOOPBACK}-{port}"


async def test_start_survives_consul_down_and_registers_when_it_appears(tmp_path: Path) -> None:
    server = ConsulServer(tmp_path)
    factory = ConsulClientFactory.from_env(server.addr)
    reg = ConsulRegistry(
        factory, name=unique_name(), host=LOOPBACK, port=free_port(), anti_entropy_seconds=0.3
    )
    await reg.start()  # Consul not running: logged, retried in the background
    try:
        server.start()
        import asyncio

        for _ in range(100):
            if reg.service_id in (factory.client().agent.services() or {}):
                break
            await asyncio.sleep(0.1)
        assert reg.service_id in factory.client().agent.services()
    finally:
        await reg.stop()
        server.close()


async def test_anti_entropy_sends_meta_a_failed_registration_left_behind(
    consul_server: ConsulServer,
) -> None:
    """A settings change re-registers with new meta; when that call fails (Consul away for
    a moment), the next anti-entropy pass sends the meta the instance has now."""
    import asyncio

    factory = ConsulClientFactory.from_env(consul_server.addr)
    reg = ConsulRegistry(factory, name=unique_name(), host=LOOPBACK, port=free_port(),
                         meta={"capacity": "11"}, anti_entropy_seconds=0.3)  # fmt: skip
    await reg.start()
    try:
        reg.meta["capacity"] = "5"  # changed here, never sent: the failed call's state
        held = []
        for _ in range(50):
            held.append(factory.client().agent.services()[reg.service_id]["Meta"]["capacity"])
            if held[-1] == "5":
                break
            await asyncio.sleep(0.1)
        print(f"capacity in Consul, every 0.1 s: {held}")
        assert held[-1] == "5", held
    finally:
        await reg.stop()


def test_replies_name_the_replica_that_made_them(consul_server: ConsulServer) -> None:
    """X-Morgan-Instance carries the replica's Consul service id (which core answered)."""
    import httpx

    name, port = unique_name(), free_port()
    app = create_app(service_settings(consul_server.addr, name, port))
    with UvicornThread(app, port=port):
        resp = httpx.get(f"http://{LOOPBACK}:{port}/health", timeout=5)
        missing = httpx.get(f"http://{LOOPBACK}:{port}/no-such-path", timeout=5)
    assert resp.headers["x-morgan-instance"] == f"{name}-{LOOPBACK}-{port}"
    assert missing.status_code == 404
    assert missing.headers["x-morgan-instance"] == f"{name}-{LOOPBACK}-{port}"
