"""A WebSocket session cannot be held open idle, nor used to push unbounded bytes."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
import websockets

from tests.core.conftest import ApiKeys
from tests.core.servers import CoreServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def core_overrides() -> dict[str, Any]:
    return {"ws_idle_timeout_seconds": 1.5, "ws_max_bytes_per_minute": 64 * 1024}


async def test_an_idle_session_is_closed(core: CoreServer, api_keys: ApiKeys) -> None:
    async with websockets.connect(core.ws_url, additional_headers=api_keys.headers) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        started = time.monotonic()
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["status"] == 408 and "ws_idle_timeout_seconds" in error["message"]
        with pytest.raises(websockets.ConnectionClosedOK) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert time.monotonic() - started >= 1.0, "closed before the idle timeout"


async def test_a_session_over_its_byte_budget_is_refused_and_closed(
    core: CoreServer, api_keys: ApiKeys
) -> None:
    chunk = base64.b64encode(b"\x00" * 24 * 1024).decode()  # 32 KB a frame
    async with websockets.connect(core.ws_url, additional_headers=api_keys.headers) as ws:
        await ws.send(json.dumps({"type": "start", "user_id": "ws-bytes"}))
        await ws.send(json.dumps({"type": "audio", "data": chunk}))
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}, "first 32 KB were refused"
        await ws.send(json.dumps({"type": "audio", "data": chunk}))  # past 64 KB this minute
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["status"] == 429 and "ws_max_bytes_per_minute" in error["message"]
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
