"""Hands-free turns on /ws/stream with a real morgan-vad: audio streams in without pause,
each utterance becomes a turn when the person stops, and speaking over an answer stops it
and keeps the turn as interrupted. The LLM is the echo service, streaming a word every
0.25 s so that there is an answer to speak over; speech is espeak-ng's."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets
from morgan.core.hands_free import LOST_REPORT_SECONDS, SWITCH_SECONDS

from tests.core.audio_samples import espeak_wav
from tests.core.conftest import ApiKeys
from tests.core.hands_free_client import RATE, Session, silence
from tests.core.hands_free_client import speech_pcm as pcm_of
from tests.core.servers import CoreServer, ModelInstance, echo_instance, started, vad_instance
from tests.harness.servers import ConsulServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

VAD = "test-vad"
DRIP_LLM = "test-echo-llm-drip"


@pytest.fixture(scope="module")
def hands_free_models(
    consul_server: ConsulServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ModelInstance]]:
    logs = tmp_path_factory.mktemp("hands-free")
    instances = {
        "vad": vad_instance(VAD, consul_server.addr, logs),
        "vad2": vad_instance(VAD, consul_server.addr, logs),
        "llm": echo_instance(DRIP_LLM, consul_server.addr, logs, word_delay_s=0.25),
    }
    with started(instances):
        yield instances


@pytest.fixture(scope="module")
def core_overrides(hands_free_models: dict[str, ModelInstance]) -> dict[str, Any]:
    return {"vad_service": VAD, "llm_service": DRIP_LLM, "hands_free_partial_seconds": 1.0}


@pytest.fixture(scope="module")
def speech_pcm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """About 2.5 s of espeak-ng speech as 16 kHz 16-bit PCM, without espeak's quiet ends."""
    return pcm_of(espeak_wav("Hello Morgan, please turn on the kitchen lights.",
                             tmp_path_factory.mktemp("speech") / "turn.wav"))  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session")
async def session(core: CoreServer, api_keys: ApiKeys) -> AsyncIterator[Session]:
    async with websockets.connect(
        core.ws_url, additional_headers={"X-API-Key": api_keys.alice}, max_size=2**24
    ) as ws:
        client = Session(ws)
        await ws.send(json.dumps({"type": "start", "mode": "hands_free", "want_audio": True}))
        await asyncio.wait_for(client.arrived.wait(), 15)
        assert client.first("started") == {
            "type": "started", "mode": "hands_free", "sample_rate": 16000
        }, client.events  # fmt: skip
        yield client
        client.reader.cancel()


async def test_an_utterance_becomes_a_turn_when_the_person_stops(
    session: Session, speech_pcm: bytes, core: CoreServer, api_keys: ApiKeys
) -> None:
    await session.stream(silence(0.5) + speech_pcm)
    assert session.first("speech_started") is not None, session.kinds()
    assert session.of("partial_transcription"), "no partial transcription while speaking"
    assert session.first("speech_ended") is None, "ended while the person still spoke"
    spoke_until = time.monotonic()
    complete = await session.stream_until("response_complete")
    ended = session.first("speech_ended")
    assert ended is not None
    said = len(speech_pcm) / 2 / RATE
    assert ended["start"] == pytest.approx(0.5, abs=0.3)
    assert ended["end"] == pytest.approx(0.5 + said, abs=0.3)
    order = session.kinds()
    stages = ["speech_ended", "transcription", "response_text", "response_audio"]
    assert [order.index(kind) for kind in [*stages, "response_complete"]] == sorted(
        order.index(kind) for kind in [*stages, "response_complete"]
    ), order
    # The echo STT says how long the audio it got was: the utterance, not the whole stream.
    transcription = session.first("transcription")
    assert transcription is not None
    heard = float(transcription["text"].split()[2])
    assert heard == pytest.approx(ended["end"] - ended["start"], abs=0.15)
    assert complete["text"].startswith(f"You said: {transcription['text']}.")
    ended_at = next(t for t, e in session.events if e["type"] == "speech_ended")
    assert ended_at - spoke_until < 1.5, "the end of speech took too long to be noticed"
    async with httpx.AsyncClient(base_url=core.url, headers={"X-API-Key": api_keys.alice}) as api:
        stored = (await api.get(f"/api/conversations/{complete['conversation_id']}")).json()
    assert [(t["user_text"], t["interrupted"]) for t in stored["turns"]] == [
        (transcription["text"], False)
    ]


async def test_speaking_over_an_answer_stops_it_and_keeps_what_was_said(
    session: Session,
    speech_pcm: bytes,
    core: CoreServer,
    api_keys: ApiKeys,
    hands_free_models: dict[str, ModelInstance],
) -> None:
    llm = hands_free_models["llm"]
    cut_before = httpx.get(f"{llm.url}/test/last").json()["streams_cut"]
    await session.stream(silence(0.3) + speech_pcm)
    await session.stream_until("response_text")
    await session.stream(silence(0.5))  # a few words of the answer
    barge_in = len(session.events)
    await session.stream(speech_pcm)
    interrupted = session.first("interrupted")
    assert interrupted is not None, session.kinds()
    assert interrupted["reaction_ms"] < 200
    after = session.kinds()[barge_in:]
    assert after.index("interrupted") < after.index("speech_started"), after
    # Nothing more of the interrupted answer arrives once it is interrupted.
    cut = session.kinds().index("interrupted")
    assert "response_complete" not in session.kinds()[:cut], "it had already finished"
    complete = await session.stream_until("response_complete")
    between = session.kinds()[cut : session.kinds().index("speech_ended", cut)]
    assert not {"response_text", "response_audio"} & set(between), between
    cut_after = httpx.get(f"{llm.url}/test/last").json()["streams_cut"]
    assert cut_after == cut_before + 1, "the LLM kept generating the interrupted answer"
    first_reply = "".join(
        e["delta"] for _, e in session.events[:cut] if e["type"] == "response_text"
    )
    async with httpx.AsyncClient(base_url=core.url, headers={"X-API-Key": api_keys.alice}) as api:
        stored = (await api.get(f"/api/conversations/{complete['conversation_id']}")).json()
    turns = stored["turns"]
    assert [t["interrupted"] for t in turns] == [True, False]
    cut_turn = turns[0]
    assert cut_turn["assistant_text"], "the words said before the interruption are kept"
    assert complete["text"] == turns[1]["assistant_text"]
    full = f"You said: {cut_turn['user_text']}. This is turn 1. I remember 0 things."
    assert full.startswith(cut_turn["assistant_text"].strip())
    assert len(cut_turn["assistant_text"].strip()) < len(full)
    assert first_reply.strip().startswith(cut_turn["assistant_text"].strip())


async def test_hands_free_inputs_refused_with_a_reason(
    core: CoreServer, api_keys: ApiKeys, hands_free_models: dict[str, ModelInstance]
) -> None:
    headers = {"X-API-Key": api_keys.alice}
    async with websockets.connect(core.ws_url, additional_headers=headers) as ws:

        async def answer(message: str | bytes) -> dict[str, Any]:
            await ws.send(message)
            reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
            return reply

        await ws.send(json.dumps({"type": "start"}))  # push-to-talk
        error = await answer(b"\x00\x00" * 160)
        assert error["status"] == 422 and "hands-free session" in error["message"]
        error = await answer(json.dumps({"type": "start", "mode": "walkie-talkie"}))
        assert error["status"] == 422 and "mode 'walkie-talkie' is unknown" in error["message"]
        started = await answer(json.dumps({"type": "start", "mode": "hands_free"}))
        assert started["type"] == "started", started
        error = await answer(b"\x00" * 321)
        assert error["status"] == 422 and "whole samples" in error["message"]
        error = await answer(json.dumps({"type": "utterance_end"}))
        assert error["status"] == 422 and "ends utterances itself" in error["message"]
        pcm = base64.b64encode(b"\x00\x00" * 320).decode()
        await ws.send(json.dumps({"type": "audio", "data": pcm}))
        assert await answer(json.dumps({"type": "ping"})) == {"type": "pong"}


async def test_a_session_goes_on_when_its_vad_instance_dies(
    session: Session, speech_pcm: bytes, hands_free_models: dict[str, ModelInstance]
) -> None:
    first, second = hands_free_models["vad"], hands_free_models["vad2"]
    # One of the two kills hits the instance the session streams to: after the first it
    # is on `second` either way, and the second kill takes that one.
    for dead, alive in ((first, second), (second, first)):
        dead.kill()
        since = len(session.events)
        await session.stream(silence(0.3) + speech_pcm)
        await session.stream_until("response_complete", since=since)
        new = [e for _, e in session.events[since:]]
        assert [e["type"] for e in new if e["type"] == "error"] == [], new
        assert any(e["type"] == "speech_ended" for e in new), new
        dead.start()
        assert alive.process.pid is not None


async def test_a_session_that_lost_every_vad_instance_goes_on_when_one_is_back(
    session: Session, speech_pcm: bytes, hands_free_models: dict[str, ModelInstance],
    core: CoreServer, api_keys: ApiKeys,
) -> None:  # fmt: skip
    first, second = hands_free_models["vad"], hands_free_models["vad2"]
    stopped = [first, second]
    try:
        first.stop()
        second.stop()
        since = len(session.events)
        lost = await session.stream_until("error", SWITCH_SECONDS + 20, since=since)
        assert lost["status"] == 503, lost
        assert "no voice detection" in lost["message"], lost
        assert "morgan-vad" in lost["message"], lost
        # Meanwhile a new hands-free session is refused, saying what is missing, and the
        # connection stays usable.
        async with websockets.connect(
            core.ws_url, additional_headers={"X-API-Key": api_keys.alice}
        ) as ws:
            await ws.send(json.dumps({"type": "start", "mode": "hands_free"}))
            error = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert error["type"] == "error" and error["status"] == 503, error
            assert "morgan-vad" in error["message"], error
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
        stopped.remove(first.start())
        # Core tries a new stream at most LOST_REPORT_SECONDS apart while audio comes in.
        await session.stream(silence(LOST_REPORT_SECONDS + 3))
        since = len(session.events)
        await session.stream(silence(0.3) + speech_pcm)
        await session.stream_until("response_complete", since=since)
        new = [e for _, e in session.events[since:]]
        assert [e for e in new if e["type"] == "error"] == [], new
        assert any(e["type"] == "speech_ended" for e in new), new
        assert session.first("transcription", since) is not None, new
    finally:
        for instance in stopped:
            instance.start()
