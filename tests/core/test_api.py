"""core's HTTP and WebSocket contract, served over real HTTP, with model services found
through the real Consul (deterministic test instances), real PostgreSQL, Redis Cluster
and Qdrant in local mode."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import time
import uuid
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets

from tests.core.audio_samples import corrupted_wav, encode, espeak_wav, silence_wav
from tests.core.conftest import (
    ECHO_LLM_SLOW,
    ECHO_TTS_BROKEN,
    ApiKeys,
)
from tests.core.servers import CoreServer, ModelInstance

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def client(core: CoreServer, api_keys: ApiKeys) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=core.url, headers=api_keys.headers, timeout=30) as c:
        yield c


def _user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- auth and docs


async def test_keys_are_required_and_revoked_keys_refused(core: CoreServer, api_keys: ApiKeys):
    body = {"text": "hi", "user_id": "x"}
    async with httpx.AsyncClient(base_url=core.url) as anon:
        assert (await anon.get("/health")).status_code == 200
        missing = await anon.post("/api/text", json=body)
        assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
        revoked = await anon.post("/api/text", json=body, headers={"X-API-Key": api_keys.revoked})
        assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
        bogus = await anon.get("/api/conversations?user_id=x", headers={"X-API-Key": "nope"})
        assert bogus.status_code == 401
        bearer = await anon.get(
            "/api/conversations?user_id=x", headers={"Authorization": f"Bearer {api_keys.good}"}
        )
        assert bearer.status_code == 200


async def test_openapi_documents_every_endpoint(core: CoreServer) -> None:
    async with httpx.AsyncClient(base_url=core.url) as anon:
        spec = (await anon.get("/openapi.json")).json()
        assert (await anon.get("/docs")).status_code == 200
    paths = spec["paths"]
    for path, method in [
        ("/api/text", "post"), ("/api/audio", "post"),
        ("/api/conversations/{conversation_id}", "get"),
        ("/api/conversations/{conversation_id}", "delete"),
        ("/api/conversations", "get"), ("/api/conversation/reset", "post"),
        ("/api/memory/search", "get"),
    ]:  # fmt: skip
        assert method in paths[path], f"{method.upper()} {path} missing from OpenAPI"


# ---------------------------------------------------------------- text turns


async def test_text_turns_carry_context_timings_and_are_persisted(
    client: httpx.AsyncClient, echo_models: dict[str, ModelInstance]
) -> None:
    user = _user()
    first = await client.post("/api/text", json={"text": "hello there", "user_id": user})
    assert first.status_code == 200, first.text
    reply = first.json()
    assert reply["text"].startswith("You said: hello there. This is turn 1.")
    assert reply["audio_base64"] is None
    timings = reply["timings"]
    for key in ("context_ms", "memory_ms", "llm_ms", "persist_ms", "tts_ms", "total_ms"):
        assert timings[key] >= 0
    assert timings["total_ms"] >= timings["llm_ms"] > 0
    cid = reply["conversation_id"]
    second = await client.post(
        "/api/text", json={"text": "and again", "user_id": user, "conversation_id": cid}
    )
    assert second.status_code == 200
    assert "This is turn 2." in second.json()["text"]  # the LLM saw the first turn
    conv = (await client.get(f"/api/conversations/{cid}")).json()
    assert conv["user_id"] == user and conv["turn_count"] == 2
    assert [t["user_text"] for t in conv["turns"]] == ["hello there", "and again"]
    assert conv["turns"][1]["assistant_text"] == second.json()["text"]
    listed = (await client.get("/api/conversations", params={"user_id": user})).json()
    assert [c["id"] for c in listed["conversations"]] == [cid]


def _counter(metrics: str, name: str) -> float:
    line = next(line for line in metrics.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[1])


async def test_a_started_conversation_is_counted_once(
    client: httpx.AsyncClient, core: CoreServer, echo_models: dict[str, ModelInstance]
) -> None:
    """A turn without conversation_id starts one; continuing it, or sending the first turn
    again with its Idempotency-Key, starts none."""
    name = "morgan_core_conversations_started_total"
    async with httpx.AsyncClient(base_url=core.url) as anon:
        before = _counter((await anon.get("/metrics")).text, name)
        user, key = _user(), {"Idempotency-Key": f"count-{uuid.uuid4()}"}
        first = await client.post("/api/text", json={"text": "hi", "user_id": user}, headers=key)
        assert first.status_code == 200, first.text
        again = await client.post("/api/text", json={"text": "hi", "user_id": user}, headers=key)
        assert again.json()["conversation_id"] == first.json()["conversation_id"]
        cid = first.json()["conversation_id"]
        more = {"text": "more", "user_id": user, "conversation_id": cid}
        assert (await client.post("/api/text", json=more)).status_code == 200
        after = _counter((await anon.get("/metrics")).text, name)
    assert after - before == 1


async def test_text_turn_with_audio_returns_wav(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/text", json={"text": "speak", "user_id": _user(),
                                                "want_audio": True})  # fmt: skip
    body = resp.json()
    assert resp.status_code == 200 and body["audio_format"] == "wav" and body["warning"] is None
    with wave.open(io.BytesIO(base64.b64decode(body["audio_base64"]))) as w:
        assert w.getframerate() == 16000 and w.getnframes() > 0
    assert body["timings"]["tts_ms"] > 0


async def test_failed_tts_still_returns_text_with_warning(
    client: httpx.AsyncClient, core: CoreServer
) -> None:
    with core.settings_changed(tts_service=ECHO_TTS_BROKEN):
        resp = await client.post("/api/text", json={"text": "speak", "user_id": _user(),
                                                    "want_audio": True})  # fmt: skip
    body = resp.json()
    assert resp.status_code == 200
    assert body["text"].startswith("You said: speak.")
    assert body["audio_base64"] is None
    assert "voice model not loaded" in body["warning"]


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"text": "", "user_id": "a"}, 422, "text"),
        ({"text": "   ", "user_id": "a"}, 422, "blank"),
        ({"user_id": "a"}, 422, "text"),
        ({"text": "hi", "user_id": "a b"}, 422, "user_id"),
        ({"text": "x" * 10_001, "user_id": "a"}, 413, "10000"),
        ({"text": "hi", "user_id": "a", "surprise": 1}, 422, "surprise"),
        ({"text": "nul \u0000 here", "user_id": "a"}, 422, "NUL"),
    ],
)
async def test_text_bad_input(
    client: httpx.AsyncClient, payload: dict[str, Any], status: int, needle: str
) -> None:
    resp = await client.post("/api/text", json=payload)
    assert resp.status_code == status, resp.text
    assert needle in json.dumps(resp.json())


async def test_ten_megabyte_text_gets_413(client: httpx.AsyncClient) -> None:
    big = json.dumps({"text": "a" * (10 * 1024 * 1024), "user_id": "a"})
    resp = await client.post("/api/text", content=big,
                             headers={"Content-Type": "application/json"})  # fmt: skip
    assert resp.status_code == 413
    assert "limit" in resp.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)].encode()

    chunked = await client.post("/api/text", content=chunks(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    assert chunked.status_code == 413


async def test_wrong_content_type_is_refused(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/api/text",
        content=b"text=hi&user_id=a",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 422
    assert resp.json()["error"].startswith("invalid request")
    not_json = await client.post("/api/text", content=b"{broken",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    assert not_json.status_code == 422


async def test_unknown_conversation_is_404_everywhere(client: httpx.AsyncClient) -> None:
    ghost = str(uuid.uuid4())
    turn = await client.post("/api/text", json={"text": "hi", "user_id": "a",
                                                "conversation_id": ghost})  # fmt: skip
    assert turn.status_code == 404 and "omit conversation_id" in turn.json()["error"]
    assert (await client.get(f"/api/conversations/{ghost}")).status_code == 404
    assert (await client.get("/api/conversations/not-a-uuid")).status_code == 404
    assert (await client.delete(f"/api/conversations/{ghost}")).status_code == 404
    reset = await client.post("/api/conversation/reset",
                              json={"user_id": "a", "conversation_id": ghost})  # fmt: skip
    assert reset.status_code == 404


async def test_someone_elses_conversation_is_not_continued(client: httpx.AsyncClient) -> None:
    owner = await client.post("/api/text", json={"text": "mine", "user_id": _user()})
    cid = owner.json()["conversation_id"]
    other = await client.post("/api/text", json={"text": "hi", "user_id": _user(),
                                                 "conversation_id": cid})  # fmt: skip
    assert other.status_code == 404


# ---------------------------------------------------------------- Idempotency-Key


async def _llm_calls(client: httpx.AsyncClient, llm: ModelInstance) -> int:
    return int((await client.get(llm.url + "/test/last")).json()["calls"])


async def test_a_repeated_idempotency_key_answers_the_stored_turn(
    client: httpx.AsyncClient, echo_models: dict[str, ModelInstance]
) -> None:
    """A client (or the gateway, for a core that died mid-request) sends the turn again:
    the same turn and conversation come back, the LLM is not asked twice, one row."""
    user, key = _user(), {"Idempotency-Key": f"turn-{uuid.uuid4()}"}
    before = await _llm_calls(client, echo_models["llm"])
    first = await client.post("/api/text", json={"text": "once", "user_id": user}, headers=key)
    again = await client.post("/api/text", json={"text": "once", "user_id": user}, headers=key)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert await _llm_calls(client, echo_models["llm"]) == before + 1
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    a, b = first.json(), again.json()
    assert (b["turn_id"], b["conversation_id"], b["text"]) == (
        a["turn_id"], a["conversation_id"], a["text"])  # fmt: skip
    conv = (await client.get(f"/api/conversations/{a['conversation_id']}")).json()
    assert [t["id"] for t in conv["turns"]] == [a["turn_id"]]
    listed = (await client.get("/api/conversations", params={"user_id": user})).json()
    assert [c["id"] for c in listed["conversations"]] == [a["conversation_id"]]
    # The same key from another user is another turn.
    other = await client.post("/api/text", json={"text": "once", "user_id": _user()},
                              headers=key)  # fmt: skip
    assert other.status_code == 200 and other.json()["turn_id"] != a["turn_id"]
    assert "Idempotent-Replayed" not in other.headers


async def test_an_idempotency_key_reused_for_another_turn_is_refused(
    client: httpx.AsyncClient,
) -> None:
    user, key = _user(), {"Idempotency-Key": uuid.uuid4().hex}
    first = await client.post("/api/text", json={"text": "one", "user_id": user}, headers=key)
    cid = first.json()["conversation_id"]
    body = {"text": "two", "user_id": user, "conversation_id": cid}
    other_text = await client.post("/api/text", json=body, headers=key)
    assert other_text.status_code == 422
    assert "different message" in other_text.json()["error"]
    elsewhere = (await client.post("/api/text", json={"text": "x", "user_id": user})).json()
    other_conv = await client.post("/api/text", json={"text": "one", "user_id": user,
                                   "conversation_id": elsewhere["conversation_id"]},
                                   headers=key)  # fmt: skip
    assert other_conv.status_code == 422 and "new key for each turn" in other_conv.json()["error"]
    conv = (await client.get(f"/api/conversations/{cid}")).json()
    assert [t["user_text"] for t in conv["turns"]] == ["one"]


@pytest.mark.parametrize("bad", ["", "x" * 129, "has space", "naïve", "a/b"])
async def test_a_malformed_idempotency_key_is_422(client: httpx.AsyncClient, bad: str) -> None:
    headers = {b"Idempotency-Key": bad.encode()}
    resp = await client.post("/api/text", json={"text": "hi", "user_id": _user()}, headers=headers)
    assert resp.status_code == 422, resp.text
    assert "Idempotency-Key" in resp.json()["error"]


async def test_a_repeated_audio_turn_is_not_transcribed_again(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    wav = espeak_wav("Remember the milk", tmp_path / "m.wav")
    user, key = _user(), {"Idempotency-Key": uuid.uuid4().hex}
    sent = [await client.post("/api/audio", files={"file": ("m.wav", wav, "audio/wav")},
                              data={"user_id": user, "want_audio": "false"}, headers=key)
            for _ in range(2)]  # fmt: skip
    assert [r.status_code for r in sent] == [200, 200], sent[0].text
    first, again = (r.json() for r in sent)
    assert again["turn_id"] == first["turn_id"]
    assert again["transcription"] == first["transcription"]
    assert again["timings"]["stt_ms"] == first["timings"]["stt_ms"]  # the stored timings
    assert sent[1].headers["Idempotent-Replayed"] == "true"


async def test_reset_and_delete(client: httpx.AsyncClient) -> None:
    user = _user()
    cid = (await client.post("/api/text", json={"text": "one", "user_id": user})).json()[
        "conversation_id"
    ]
    await client.post("/api/text", json={"text": "two", "user_id": user, "conversation_id": cid})
    reset = await client.post(
        "/api/conversation/reset", json={"user_id": user, "conversation_id": cid}
    )
    assert reset.status_code == 200 and reset.json()["turns_removed"] == 2
    after = await client.post("/api/text", json={"text": "three", "user_id": user,
                                                 "conversation_id": cid})  # fmt: skip
    assert "This is turn 1." in after.json()["text"]  # context (and its cache) was cleared
    assert (await client.delete(f"/api/conversations/{cid}")).json() == {
        "conversation_id": cid, "deleted": True,
    }  # fmt: skip
    assert (await client.get(f"/api/conversations/{cid}")).status_code == 404
    bad = await client.post("/api/conversation/reset", json={"user_id": user})
    assert bad.status_code == 422


async def test_memory_is_stored_searched_and_used_in_later_conversations(
    client: httpx.AsyncClient, echo_models: dict[str, ModelInstance]
) -> None:
    user = _user()
    await client.post("/api/text", json={"text": "My dog is called Biscuit", "user_id": user})
    await client.post("/api/text", json={"text": "I work as a nurse", "user_id": user})
    search = await client.get(
        "/api/memory/search", params={"q": "what is my dog's name?", "user_id": user, "k": 2}
    )
    assert search.status_code == 200
    results = search.json()["results"]
    assert results[0]["text"] == "My dog is called Biscuit"
    # A new conversation gets the memories in the LLM's system prompt.
    resp = await client.post("/api/text", json={"text": "tell me about my dog",
                                                "user_id": user})  # fmt: skip
    assert resp.json()["memories_used"] >= 1
    async with httpx.AsyncClient(base_url=echo_models["llm"].url) as llm:
        seen = (await llm.get("/test/last")).json()["messages"]
    assert "My dog is called Biscuit" in seen[0]["content"]
    for params in ({"q": "", "user_id": user}, {"q": "x", "user_id": "a b"},
                   {"q": "   ", "user_id": user}):  # fmt: skip
        assert (await client.get("/api/memory/search", params=params)).status_code == 422


# ---------------------------------------------------------------- audio turns


async def test_audio_turn_with_speech(client: httpx.AsyncClient, tmp_path: Path) -> None:
    wav = espeak_wav("Hello Morgan, what time is it?", tmp_path / "q.wav")
    resp = await client.post(
        "/api/audio", files={"file": ("q.wav", wav, "audio/wav")}, data={"user_id": _user()}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["transcription"].startswith("audio of ")
    assert body["text"].startswith(f"You said: {body['transcription']}.")
    assert body["audio_format"] == "wav" and base64.b64decode(body["audio_base64"])[:4] == b"RIFF"
    assert body["timings"]["stt_ms"] > 0 and body["timings"]["tts_ms"] > 0


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3"])
async def test_audio_formats_are_accepted(client: httpx.AsyncClient, fmt: str) -> None:
    data = encode(silence_wav(1.0, rate=16000), fmt)
    ct = "audio/mpeg" if fmt == "mp3" else f"audio/{fmt}"
    resp = await client.post("/api/audio", files={"file": (f"a.{fmt}", data, ct)},
                             data={"user_id": _user(), "want_audio": "false"})  # fmt: skip
    # The test STT only reads wav: it answers 400, which core reports as unreadable audio.
    assert resp.status_code == 422
    assert "stt could not read the audio" in resp.json()["error"]


async def test_audio_bad_input(client: httpx.AsyncClient) -> None:
    user = {"user_id": "a"}
    corrupt = await client.post(
        "/api/audio", files={"file": ("a.wav", corrupted_wav(), "audio/wav")}, data=user
    )
    assert corrupt.status_code == 422
    assert "could not decode the audio" in corrupt.json()["error"]
    text_file = await client.post(
        "/api/audio", files={"file": ("a.txt", b"hello", "text/plain")}, data=user
    )
    assert text_file.status_code == 415 and "wav, flac, ogg, mp3" in text_file.json()["error"]
    as_json = await client.post("/api/audio", json={"file": "x", "user_id": "a"})
    assert as_json.status_code == 422
    bad_user = await client.post(
        "/api/audio", files={"file": ("a.wav", silence_wav(1), "audio/wav")},
        data={"user_id": "a b"},
    )  # fmt: skip
    assert bad_user.status_code == 422 and "user_id" in bad_user.text
    long = await client.post(
        "/api/audio", files={"file": ("a.wav", silence_wav(301), "audio/wav")}, data=user
    )
    assert long.status_code == 413 and "limit is 300 s" in long.json()["error"]
    huge = silence_wav(1) + b"\0" * (26 * 1024 * 1024)
    too_big = await client.post("/api/audio", files={"file": ("a.wav", huge, "audio/wav")},
                                data=user)  # fmt: skip
    assert too_big.status_code == 413


# ---------------------------------------------------------------- WebSocket


async def test_websocket_streams_text_and_sentence_audio(
    core: CoreServer, api_keys: ApiKeys, tmp_path: Path
) -> None:
    user = _user()
    async with websockets.connect(core.ws_url, additional_headers=api_keys.headers) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.send(json.dumps({"type": "start", "user_id": user}))
        await ws.send(json.dumps({"type": "text", "text": "Tell me. Something nice"}))
        events = []
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 20))
            events.append(event)
            if event["type"] in ("response_complete", "error"):
                break
        kinds = [e["type"] for e in events]
        assert kinds[-1] == "response_complete", events[-1]
        deltas = "".join(e["delta"] for e in events if e["type"] == "response_text")
        done = events[-1]
        assert deltas == done["text"] and done["text"].startswith("You said: Tell me.")
        audio = [e for e in events if e["type"] == "response_audio"]
        assert len(audio) >= 2  # the reply has several sentences, each spoken on its own
        assert [a["index"] for a in audio] == list(range(len(audio)))
        assert base64.b64decode(audio[0]["data"])[:4] == b"RIFF"
        assert done["timings"]["llm_ms"] > 0 and done["timings"]["first_token_ms"] > 0

        # a spoken utterance in chunks, then the same conversation continues
        wav = espeak_wav("What is the weather?", tmp_path / "w.wav")
        for i in range(0, len(wav), 16384):
            chunk = base64.b64encode(wav[i : i + 16384]).decode()
            await ws.send(json.dumps({"type": "audio", "data": chunk}))
        await ws.send(json.dumps({"type": "utterance_end"}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert first["type"] == "transcription" and first["text"].startswith("audio of")
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if event["type"] == "response_complete":
                break
            assert event["type"] != "error", event
        assert "This is turn 2." in event["text"]
        assert event["conversation_id"] == done["conversation_id"]

        for bad, status in [({"type": "dance"}, 422), ({"nope": 1}, 422),
                            ({"type": "audio", "data": "@@@"}, 422),
                            ({"type": "text", "text": ""}, 422),
                            ({"type": "text", "text": "x" * 10_001}, 413)]:  # fmt: skip
            await ws.send(json.dumps(bad))
            err = json.loads(await ws.recv())
            assert err["type"] == "error" and err["status"] == status, (bad, err)
        await ws.send("not json")
        assert json.loads(await ws.recv())["status"] == 422
        await ws.send(json.dumps({"type": "utterance_end"}))  # empty buffer
        err = json.loads(await ws.recv())
        assert err["status"] == 422 and "empty" in err["message"]
        await ws.send(json.dumps({"type": "stop"}))
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), 5)


async def test_websocket_needs_start_and_a_valid_key(core: CoreServer, api_keys: ApiKeys):
    async with websockets.connect(
        core.ws_url, additional_headers={"X-API-Key": api_keys.good}
    ) as ws:
        await ws.send(json.dumps({"type": "text", "text": "hi"}))
        err = json.loads(await ws.recv())
        assert err["status"] == 422 and "start" in err["message"]
    for headers in ({}, {"X-API-Key": api_keys.revoked}):
        with pytest.raises((websockets.ConnectionClosedError, websockets.InvalidStatus)) as info:
            async with websockets.connect(core.ws_url, additional_headers=headers) as ws:
                await ws.recv()
        if isinstance(info.value, websockets.ConnectionClosedError):
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008


# ---------------------------------------------------------------- overload


async def test_sixty_concurrent_turns_over_max_inflight_get_503_never_500(
    client: httpx.AsyncClient, core: CoreServer, echo_models: dict[str, ModelInstance]
) -> None:
    orch = core.orchestrator
    memory, orch.memory = orch.memory, None  # keep the burst about admission, not embedding
    try:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=core.url, headers=client.headers, timeout=60,
                                     limits=limits) as burst:  # fmt: skip
            # every turn holds its slot for >= 2 s
            with core.settings_changed(llm_service=ECHO_LLM_SLOW):
                responses = await asyncio.gather(*(
                    burst.post("/api/text", json={"text": f"turn {i}", "user_id": "burst"})
                    for i in range(60)
                ))  # fmt: skip
    finally:
        orch.memory = memory
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 50 and statuses.count(503) == 10, statuses
    for r in responses:
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "1"
            assert "max_inflight=50" in r.json()["error"]
    assert orch.limiter.inflight == 0
    async with httpx.AsyncClient(base_url=core.url) as anon:
        metrics = (await anon.get("/metrics")).text
    rejected = [line for line in metrics.splitlines()
                if line.startswith("morgan_core_turns_rejected_total ")]  # fmt: skip
    assert rejected and float(rejected[0].split()[1]) >= 10
    assert 'morgan_core_stage_seconds_count{stage="llm"}' in metrics


# ---------------------------------------------------------------- rate limits


async def _fresh_window() -> None:
    """Budgets are fixed one-minute windows (wall clock): a test whose requests straddled
    a window's end would see the count start again. Start in a window with 20 s left."""
    left = 60 - time.time() % 60
    if left < 20:
        await asyncio.sleep(left + 0.2)


_CLIENT_IPS = itertools.count(1)


def _client_ip() -> str:
    # A documentation address (TEST-NET-2), carried only in X-Forwarded-For: a fresh budget.
    # Each call a new one (a random pick could repeat: two "clients" sharing one budget).
    return f"198.51.100.{next(_CLIENT_IPS)}"


async def test_api_requests_past_the_budget_get_429_with_retry_after(
    core: CoreServer, client: httpx.AsyncClient
) -> None:
    ip, other = _client_ip(), _client_ip()
    params = {"user_id": _user()}
    await _fresh_window()
    with core.settings_changed(rate_limit_per_minute=5):
        got = [await client.get("/api/conversations", params=params,
                                headers={"X-Forwarded-For": f"203.0.113.9, {ip}"})
               for _ in range(7)]  # fmt: skip
        statuses = [r.status_code for r in got]
        assert statuses == [200] * 5 + [429] * 2, statuses
        refused = got[-1]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "rate_limit_per_minute" in refused.json()["error"] and ip in refused.json()["error"]
        # The budget is the client's: another one is still served.
        fine = await client.get("/api/conversations", params=params,
                                headers={"X-Forwarded-For": other})  # fmt: skip
        assert fine.status_code == 200
        # Refused before authentication: not even a key is looked at.
        anonymous = await client.get("/api/conversations", params=params,
                                     headers={"X-Forwarded-For": ip, "X-API-Key": ""})  # fmt: skip
        assert anonymous.status_code == 429


async def test_audio_turns_have_their_own_smaller_budget(
    core: CoreServer, client: httpx.AsyncClient
) -> None:
    ip = _client_ip()
    headers = {"X-Forwarded-For": ip}
    await _fresh_window()
    with core.settings_changed(rate_limit_per_minute=100, audio_rate_limit_per_minute=2):
        statuses = []
        for _ in range(3):
            wav = {"file": ("a.wav", silence_wav(1), "audio/wav")}
            resp = await client.post("/api/audio", headers=headers, data={"user_id": _user()},
                                     files=wav)  # fmt: skip
            statuses.append(resp.status_code)
        assert statuses[:2] != [429, 429] and statuses[2] == 429, statuses
        assert "audio_rate_limit_per_minute" in resp.json()["error"]
        text = await client.post("/api/text", headers=headers,
                                 json={"text": "hi", "user_id": _user()})  # fmt: skip
        assert text.status_code == 200, text.text


async def test_websocket_turns_count_in_the_same_budget(
    core: CoreServer, client: httpx.AsyncClient, api_keys: ApiKeys
) -> None:
    ip = _client_ip()
    await _fresh_window()
    with core.settings_changed(rate_limit_per_minute=3):
        for _ in range(2):
            ok = await client.get("/api/conversations", params={"user_id": _user()},
                                  headers={"X-Forwarded-For": ip})  # fmt: skip
            assert ok.status_code == 200
        headers = {**api_keys.headers, "X-Forwarded-For": ip}
        async with websockets.connect(core.ws_url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"type": "start", "user_id": _user()}))
            events = []
            for turn in range(2):
                await ws.send(json.dumps({"type": "text", "text": f"turn {turn}"}))
                while True:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 20))
                    if event["type"] in ("response_complete", "error"):
                        events.append(event)
                        break
        assert events[0]["type"] == "response_complete", events[0]
        assert events[1]["type"] == "error" and events[1]["status"] == 429, events[1]
        assert 1 <= events[1]["retry_after"] <= 60


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    core: CoreServer, client: httpx.AsyncClient
) -> None:
    """A peer that is not a trusted proxy cannot pick a fresh budget by naming a client."""
    await _fresh_window()
    with core.settings_changed(rate_limit_per_minute=2, trusted_proxies=[]):
        statuses = [
            (await client.get("/api/conversations", params={"user_id": _user()},
                              headers={"X-Forwarded-For": _client_ip()})).status_code
            for _ in range(3)
        ]  # fmt: skip
    assert statuses[2] == 429, statuses
