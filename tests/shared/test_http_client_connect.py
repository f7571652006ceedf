"""An instance whose host is gone never answers the connection's SYN: the client gives it
connect_timeout, not the stage's whole budget, and the next instance answers in time."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from morgan.shared.discovery import ConsulServiceDiscovery
from morgan.shared.http_client import MorganHTTPClient
from morgan.shared.metrics import UPSTREAM_RETRIES_TOTAL

from tests.harness.ports import LOOPBACK
from tests.shared.helpers import UvicornThread, seed_endpoints, unique_name


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a new connection's SYN goes unanswered,
    as a vanished host's would."""
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    filler = socket.create_connection((LOOPBACK, port), timeout=2)  # the one queued slot
    probe = socket.socket()
    probe.settimeout(0.3)
    with pytest.raises(TimeoutError):
        probe.connect((LOOPBACK, port))  # the next connection is left hanging
    probe.close()
    try:
        yield port
    finally:
        filler.close()
        listener.close()


async def test_an_instance_that_never_accepts_costs_the_connect_timeout(
    unanswered_port: int,
) -> None:
    app = FastAPI()

    @app.get("/whoami")
    async def whoami() -> dict[str, str]:
        return {"who": "alive"}

    name = unique_name()
    with UvicornThread(app) as alive:
        d = ConsulServiceDiscovery("127.0.0.1:1", watch=False)
        seed_endpoints(d, name, [unanswered_port, alive.port])
        connects = UPSTREAM_RETRIES_TOTAL.labels(name, "connect")
        # A stage timeout of 30 s but a deadline of 4 s: waiting out the SYN for the
        # stage timeout would leave no time for the instance that is alive.
        async with MorganHTTPClient(d, timeout=30, deadline=4, connect_timeout=0.5) as client:
            for _ in range(4):  # round-robin: the unanswered instance comes first in some
                resp = await client.request(name, "GET", "/whoami")
                assert resp.json() == {"who": "alive"}
        assert connects._value.get() >= 1
        d.close()
