"""A key acts for its owner only: another user's conversations and memory cannot be listed,
read, continued, reset, deleted or searched with it, whatever `user_id` the client sends.
Scopes: admin keys may act for anyone, service keys are refused by core."""

from __future__ import annotations

import io
import json
import logging
import uuid

import httpx
import pytest
import websockets
from morgan.shared.logging import JsonFormatter

from tests.core.conftest import ApiKeys
from tests.core.servers import CoreServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _as(core: CoreServer, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=core.url, headers={"X-API-Key": key}, timeout=30)


async def test_another_users_data_answers_404_and_naming_them_403(
    core: CoreServer, api_keys: ApiKeys
) -> None:
    secret = f"my locker code is {uuid.uuid4().hex[:6]}"
    async with _as(core, api_keys.alice) as alice, _as(core, api_keys.bob) as bob:
        mine = await alice.post("/api/text", json={"text": secret})
        assert mine.status_code == 200, mine.text
        cid = mine.json()["conversation_id"]
        listed = (await alice.get("/api/conversations")).json()
        assert listed["user_id"] == "alice" and cid in [c["id"] for c in listed["conversations"]]

        # Bob names alice: refused before anything is read.
        for attempt in (
            bob.get("/api/conversations", params={"user_id": "alice"}),
            bob.get("/api/memory/search", params={"q": "locker code", "user_id": "alice"}),
            bob.get(f"/api/conversations/{cid}", params={"user_id": "alice"}),
            bob.post("/api/text", json={"text": "hi", "user_id": "alice"}),
            bob.post("/api/conversation/reset", json={"conversation_id": cid, "user_id": "alice"}),
        ):
            refused = await attempt
            assert refused.status_code == 403, refused.text
            assert "acts only for its owner" in refused.json()["error"]
        # Bob as himself: alice's conversation does not exist for him.
        assert (await bob.get(f"/api/conversations/{cid}")).status_code == 404
        cont = await bob.post("/api/text", json={"text": "tell me", "conversation_id": cid})
        assert cont.status_code == 404, cont.text
        reset = await bob.post("/api/conversation/reset", json={"conversation_id": cid})
        assert reset.status_code == 404, reset.text
        assert (await bob.delete(f"/api/conversations/{cid}")).status_code == 404
        theirs = (await bob.get("/api/conversations")).json()
        assert theirs["user_id"] == "bob" and cid not in [c["id"] for c in theirs["conversations"]]
        found = (await bob.get("/api/memory/search", params={"q": secret})).json()
        assert secret not in [hit["text"] for hit in found["results"]]
        # Nothing of alice's was lost.
        kept = (await alice.get(f"/api/conversations/{cid}")).json()
        assert [t["user_text"] for t in kept["turns"]] == [secret]
        recalled = (await alice.get("/api/memory/search", params={"q": secret})).json()
        assert secret in [hit["text"] for hit in recalled["results"]]


async def test_admin_key_acts_for_the_user_it_names(core: CoreServer, api_keys: ApiKeys) -> None:
    async with _as(core, api_keys.good) as admin, _as(core, api_keys.alice) as alice:
        made = await admin.post("/api/text", json={"text": "for alice", "user_id": "alice"})
        assert made.status_code == 200, made.text
        cid = made.json()["conversation_id"]
        assert cid in [c["id"] for c in (await alice.get("/api/conversations")).json()[
            "conversations"]]  # fmt: skip
        read = await admin.get(f"/api/conversations/{cid}")
        assert read.status_code == 200 and read.json()["user_id"] == "alice"
        wrong_owner = await admin.get(f"/api/conversations/{cid}", params={"user_id": "bob"})
        assert wrong_owner.status_code == 404


async def test_core_refuses_a_service_key(core: CoreServer, api_keys: ApiKeys) -> None:
    async with _as(core, api_keys.service) as service:
        refused = await service.post("/api/text", json={"text": "hi", "user_id": "x"})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "forbidden"
    assert "accepts only admin or user keys" in refused.json()["detail"]


async def test_websocket_acts_for_the_keys_owner(core: CoreServer, api_keys: ApiKeys) -> None:
    # A browser's way: the key as a subprotocol, never in the URL.
    async with websockets.connect(
        core.ws_url,
        subprotocols=["morgan", f"bearer.{api_keys.bob}"],  # type: ignore[list-item]
    ) as ws:
        assert ws.subprotocol == "morgan"
        await ws.send(json.dumps({"type": "start", "user_id": "alice"}))
        err = json.loads(await ws.recv())
        assert err["type"] == "error" and err["status"] == 403, err
        await ws.send(json.dumps({"type": "start"}))
        await ws.send(json.dumps({"type": "text", "text": "hello"}))
        while (event := json.loads(await ws.recv()))["type"] != "response_complete":
            assert event["type"] != "error", event
    async with _as(core, api_keys.bob) as bob:
        convs = (await bob.get("/api/conversations")).json()["conversations"]
    assert event["conversation_id"] in [c["id"] for c in convs]


async def test_a_key_in_the_url_is_refused_and_kept_out_of_the_logs(
    core: CoreServer, api_keys: ApiKeys
) -> None:
    # What the service's JSON log handler writes for every record of this test.
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("morgan-core", "test"))
    logging.getLogger().addHandler(handler)
    try:
        await _try_keys_in_urls(core, api_keys)
    finally:
        logging.getLogger().removeHandler(handler)
    logged = buffer.getvalue()
    key_id, secret = api_keys.alice.split("_")[1], api_keys.alice.split("_", 2)[2]
    assert f"mk_{key_id}_[redacted]" in logged, "the refused handshake's log line is missing"
    assert secret not in logged


async def _try_keys_in_urls(core: CoreServer, api_keys: ApiKeys) -> None:
    async with httpx.AsyncClient(base_url=core.url) as anon:
        in_url = await anon.get("/api/conversations", params={"api_key": api_keys.alice})
    assert in_url.status_code == 400 and "not accepted in the URL" in in_url.json()["detail"]
    # Refused in the handshake, before the WebSocket is accepted.
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"{core.ws_url}?api_key={api_keys.alice}") as ws:
            await ws.recv()
    assert refused.value.response.status_code == 403
