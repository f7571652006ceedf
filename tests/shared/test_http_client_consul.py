"""MorganHTTPClient against real uvicorn instances registered in a real Consul."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import APIRouter, Request, Response
from morgan.models.limiter import ConcurrencyLimiter
from morgan.models.service_app import install_model_error_handler
from morgan.shared.app import create_app
from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.discovery import ConsulServiceDiscovery
from morgan.shared.http_client import MorganHTTPClient, UpstreamError
from morgan.shared.logging import request_id_var
from morgan.shared.metrics import UPSTREAM_BUSY_WAITS_TOTAL
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


# ---------------------------------------------------------------- busy instances


def busy_app(consul_addr: str, name: str, port: int, served: list[int]):  # type: ignore[no-untyped-def]
    """An instance that works 0.3 s per request, one at a time, with no queue: a second
    request at once gets the model services' busy answer (503 + Retry-After: 1)."""
    router = APIRouter()
    limiter = ConcurrencyLimiter(1, 0, what=name, retry_after_seconds=1)

    @router.post("/work")
    async def work() -> dict:
        async with limiter.slot():
            served.append(port)
            await asyncio.sleep(0.3)
            return {"port": port}

    settings = ServiceSettings(
        service_name=name, host=LOOPBACK, bind_host=LOOPBACK, port=port,
        consul_http_addr=consul_addr, consul_check_interval="1s", auth_enabled=False,
    )  # fmt: skip
    app = create_app(settings, routers=[router])
    install_model_error_handler(app)
    return app


@pytest.fixture
async def two_busy_instances(consul: ConsulClientFactory):  # type: ignore[no-untyped-def]
    name, served = unique_name(), []
    servers = [UvicornThread(busy_app(consul.addr, name, port, served), port=port).start()
               for port in (free_port(), free_port())]  # fmt: skip
    try:
        yield name, servers, served
    finally:
        for server in servers:
            server.stop()


async def test_busy_instances_are_waited_out_within_the_deadline(
    consul: ConsulClientFactory, two_busy_instances: tuple[str, list[UvicornThread], list[int]]
) -> None:
    """Six POSTs (no Idempotency-Key: a busy answer did no work, so resending is safe) at
    two instances that take one each: every one is served, none comes back busy."""
    name, servers, served = two_busy_instances
    d = ConsulServiceDiscovery(consul, watch_wait_seconds=2)
    waits_before = UPSTREAM_BUSY_WAITS_TOTAL.labels(name)._value.get()
    async with MorganHTTPClient(d, timeout=5, deadline=30) as client:
        await aeventually(lambda: passing_count(d, name, 2), timeout=15, what="2 instances")
        responses = await asyncio.gather(
            *(client.request(name, "POST", "/work", json={}) for _ in range(6))
        )
        # A busy instance is not a failed one: neither is marked slow.
        assert all(d.latency(e) is None or d.latency(e) < 1 for e in await d.discover(name))
    d.close()
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    assert len(served) == 6, served
    assert set(served) == {s.port for s in servers}, "both instances served"
    assert UPSTREAM_BUSY_WAITS_TOTAL.labels(name)._value.get() > waits_before


async def test_a_busy_answer_comes_back_when_the_deadline_leaves_no_time(
    consul: ConsulClientFactory, two_busy_instances: tuple[str, list[UvicornThread], list[int]]
) -> None:
    name, _, served = two_busy_instances
    d = ConsulServiceDiscovery(consul, watch_wait_seconds=2)
    async with MorganHTTPClient(d, timeout=5, deadline=30) as client:
        await aeventually(lambda: passing_count(d, name, 2), timeout=15, what="2 instances")
        # 0.8 s leaves no room to wait a 1 s Retry-After: the busy answer is final.
        end = client.clock() + 0.8
        responses = await asyncio.gather(
            *(client.request(name, "POST", "/work", json={}, deadline=end) for _ in range(4))
        )
    d.close()
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 503, 503], statuses
    assert len(served) == 2
    for r in responses:
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "1" and "busy" in r.text
