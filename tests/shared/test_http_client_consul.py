"""MorganHTTPClient against real uvicorn instances registered in a real Consul."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import APIRouter, Request, Response
from morgan.shared.app import create_app
from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.discovery import ConsulServiceDiscovery
from morgan.shared.http_client import MorganHTTPClient, UpstreamError
from morgan.shared.logging import request_id_var
from morgan.shared.registry import ConsulRegistry
from morgan.shared.settings import ServiceSettings

from tests.harness.ports import LOOPBACK, free_port
from tests.shared.helpers import UvicornThread, aeventually, seed_endpoints, unique_name

pytestmark = pytest.mark.integration


def upstream_app(
    consul_addr: str, name: str, port: int, hits: dict[str, int], *, register: bool = True
):  # type: ignore[no-untyped-def]
    router = APIRouter()

    @router.get("/whoami")
    async def whoami(request: Request) -> dict:
        hits["get"] = hits.get("get", 0) + 1
        return {"port": port, "request_id": request.headers.get("x-request-id")}

    @router.post("/busy")
    async def busy(request: Request) -> Response:
        hits["post"] = hits.get("post", 0) + 1
        return Response(status_code=503, content=b'{"error": "busy"}')

    settings = ServiceSettings(
        service_name=name,
        host=LOOPBACK,
        bind_host=LOOPBACK,
        port=port,
        consul_http_addr=consul_addr,
        consul_check_interval="1s",
        auth_enabled=False,
        register_in_consul=register,
    )
    return create_app(settings, routers=[router])


@pytest.fixture
async def two_instances(consul: ConsulClientFactory):  # type: ignore[no-untyped-def]
    """Two real instances registered in Consul. Registration is done here, not by the apps, so
    killing an instance leaves it in Consul the way a crash would."""
    name = unique_name()
    hits: list[dict[str, int]] = [{}, {}]
    servers: list[UvicornThread] = []
    regs: list[ConsulRegistry] = []
    for i in range(2):
        port = free_port()
        app = upstream_app(consul.addr, name, port, hits[i], register=False)
        servers.append(UvicornThread(app, port=port).start())
        reg = ConsulRegistry(consul, name=name, host=LOOPBACK, port=port, check_interval="1s")
        await reg.register()
        regs.append(reg)
    try:
        yield name, servers, hits
    finally:
        for s in servers:
            if s.thread.is_alive():
                s.stop()
        for r in regs:
            await r.deregister()


async def passing_count(d: ConsulServiceDiscovery, name: str, n: int) -> bool:
    try:
        return len(await d.discover(name)) == n
    except Exception:
        return False


async def test_calls_fail_over_when_one_instance_is_killed(
    consul: ConsulClientFactory,
    two_instances: tuple[str, list[UvicornThread], list[dict]],
) -> None:
    name, servers, _ = two_instances
    d = ConsulServiceDiscovery(consul, watch_wait_seconds=2)
    client = MorganHTTPClient(d, timeout=5, deadline=20)
    try:
        await aeventually(lambda: passing_count(d, name, 2), timeout=15, what="2 instances")
        ports = {(await client.request(name, "GET", "/whoami")).json()["port"] for _ in range(4)}
        assert ports == {servers[0].port, servers[1].port}  # round-robin uses both
        servers[0].kill()
        # Consul still lists the dead one for a while: every call must still succeed.
        for _ in range(10):
            r = await client.request(name, "GET", "/whoami")
            assert r.status_code == 200
            assert r.json()["port"] == servers[1].port
    finally:
        await client.aclose()
        d.close()


async def test_request_id_is_propagated(
    consul: ConsulClientFactory,
    two_instances: tuple[str, list[UvicornThread], list[dict]],
) -> None:
    name, _, _ = two_instances
    d = ConsulServiceDiscovery(consul, watch_wait_seconds=2)
    async with MorganHTTPClient(d, timeout=5) as client:
        await aeventually(lambda: passing_count(d, name, 2), timeout=15, what="2 instances")
        token = request_id_var.set("rid-propagate-1")
        try:
            r = await client.request(name, "GET", "/whoami")
        finally:
            request_id_var.reset(token)
        assert r.json()["request_id"] == "rid-propagate-1"
        assert r.headers["x-request-id"] == "rid-propagate-1"
    d.close()


async def test_post_503_is_not_retried_without_idempotency_key_but_is_with_one(
    consul: ConsulClientFactory,
    two_instances: tuple[str, list[UvicornThread], list[dict]],
) -> None:
    name, _, hits = two_instances
    d = ConsulServiceDiscovery(consul, watch_wait_seconds=2)
    async with MorganHTTPClient(d, timeout=5, backoff_base=0.01) as client:
        await aeventually(lambda: passing_count(d, name, 2), timeout=15, what="2 instances")
        r = await client.request(name, "POST", "/busy", json={"a": 1})
        assert r.status_code == 503
        assert sum(h.get("post", 0) for h in hits) == 1
        r = await client.request(name, "POST", "/busy", json={"a": 1}, idempotency_key="k-1")
        assert r.status_code == 503  # every attempt answered 503: the last answer is returned
        assert sum(h.get("post", 0) for h in hits) == 1 + 5
        assert all(h.get("post", 0) >= 2 for h in hits)  # both instances were tried
    d.close()


async def _drop_after_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.close()


async def test_post_that_was_sent_is_not_retried_but_get_is() -> None:
    # An instance that reads the request and hangs up: the POST may have been processed.
    server = await asyncio.start_server(_drop_after_reading, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    d = ConsulServiceDiscovery("127.0.0.1:1", watch=False)
    seed_endpoints(d, "morgan-drop", [port])
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    async with MorganHTTPClient(d, timeout=5, sleep=sleep) as client:
        with pytest.raises(UpstreamError, match="not retried because it is not idempotent"):
            await client.request("morgan-drop", "POST", "/api/text", json={"t": 1})
        assert slept == []
        with pytest.raises(UpstreamError):
            await client.request("morgan-drop", "GET", "/x")
        assert len(slept) == 4
        slept.clear()
        with pytest.raises(UpstreamError):
            await client.request("morgan-drop", "POST", "/x", idempotency_key="abc")
        assert len(slept) == 4
    server.close()
    await server.wait_closed()


async def test_stream_reads_a_chunked_body(consul: ConsulClientFactory) -> None:
    from fastapi.responses import StreamingResponse

    name = unique_name()
    port = free_port()
    router = APIRouter()

    @router.get("/events")
    async def events() -> StreamingResponse:
        async def gen():  # type: ignore[no-untyped-def]
            for i in range(3):
                yield f"data: {i}\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    settings = ServiceSettings(
        service_name=name,
        host=LOOPBACK,
        bind_host=LOOPBACK,
        port=port,
        consul_http_addr=consul.addr,
        consul_check_interval="1s",
        auth_enabled=False,
    )
    d = ConsulServiceDiscovery(consul, watch_wait_seconds=2)
    with UvicornThread(create_app(settings, routers=[router]), port=port):
        await aeventually(lambda: passing_count(d, name, 1), timeout=15, what="1 instance")
        async with MorganHTTPClient(d) as client, client.stream(name, "GET", "/events") as resp:
            lines = [ln async for ln in resp.aiter_lines() if ln]
    assert lines == ["data: 0", "data: 1", "data: 2"]
    d.close()
