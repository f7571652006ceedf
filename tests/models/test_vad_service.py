"""morgan-vad in process with Silero VAD's bundled model and espeak-ng speech: where the
speech is in a file and in a live stream, and every bad input refused with a clear 4xx."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr
from fastapi.testclient import TestClient
from morgan.shared.auth import ApiKeyStore
from morgan.shared.consul_client import ConsulClientFactory
from morgan.vad.app import build_app
from morgan.vad.config import VADSettings
from starlette.websockets import WebSocketDisconnect

from tests.harness.servers import ConsulServer
from tests.models.conftest import local_settings, running

pytestmark = [pytest.mark.integration]
in_session_loop = pytest.mark.asyncio(loop_scope="session")

RATE = 16000
LEAD, GAP, TAIL = 1.0, 1.5, 1.0  # seconds of silence before, between and after


def settings(**overrides: Any) -> VADSettings:
    return VADSettings(**{**local_settings(), **overrides})


@pytest.fixture(scope="module")
def speech(speech_wav: bytes) -> np.ndarray:
    data, rate = sf.read(io.BytesIO(speech_wav), dtype="float32")
    return np.asarray(soxr.resample(data, rate, RATE), dtype=np.float32)


@pytest.fixture(scope="module")
def two_utterances(speech: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Silence, the sentence, a pause, the sentence again, silence; and where each is."""

    def quiet(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * RATE), np.float32)

    audio = np.concatenate([quiet(LEAD), speech, quiet(GAP), speech, quiet(TAIL)])
    said = len(speech) / RATE
    second = LEAD + said + GAP
    return audio, [(LEAD, LEAD + said), (second, second + said)]


def wav_bytes(samples: np.ndarray, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def assert_near(found: list[tuple[float, float]], expected: list[tuple[float, float]]) -> None:
    """Each segment within 0.3 s of where the speech was (espeak leaves quiet at its edges)."""
    assert len(found) == len(expected), (found, expected)
    for (start, end), (want_start, want_end) in zip(found, expected, strict=True):
        assert abs(start - want_start) < 0.3, (found, expected)
        assert abs(end - want_end) < 0.3, (found, expected)


@in_session_loop
async def test_a_file_has_its_two_utterances_found_in_every_format(
    two_utterances: tuple[np.ndarray, list[tuple[float, float]]],
) -> None:
    audio, expected = two_utterances
    async with running(build_app(settings())) as client:
        for fmt in ("WAV", "FLAC"):
            reply = await client.post(
                "/v1/vad", files={"file": ("a." + fmt, wav_bytes(audio, fmt))}
            )
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["duration"] == pytest.approx(len(audio) / RATE, abs=0.01)
            found = [(s["start"], s["end"]) for s in body["segments"]]
            assert_near(found, expected)
            assert body["speech_seconds"] == pytest.approx(sum(e - s for s, e in found), abs=0.01)
        metrics = (await client.get("/metrics")).text
        assert (
            'morgan_audio_seconds_processed_total{model="silero_vad",service="morgan-vad"}'
            in metrics
        )


@in_session_loop
async def test_silence_and_noise_are_not_speech() -> None:
    noise = np.random.default_rng(7).normal(0, 0.05, 3 * RATE).astype(np.float32)
    async with running(build_app(settings())) as client:
        for audio in (np.zeros(3 * RATE, np.float32), noise):
            reply = await client.post("/v1/vad", files={"file": ("q.wav", wav_bytes(audio))})
            assert reply.status_code == 200, reply.text
            assert reply.json()["segments"] == []
            assert reply.json()["speech_seconds"] == 0


@in_session_loop
async def test_a_request_may_set_its_own_silence_length(
    two_utterances: tuple[np.ndarray, list[tuple[float, float]]],
) -> None:
    audio, _ = two_utterances
    upload = {"file": ("a.wav", wav_bytes(audio))}
    async with running(build_app(settings())) as client:
        default = (await client.post("/v1/vad", files=upload)).json()["segments"]
        # A pause of 2 s is longer than the one between the sentences: one utterance.
        joined = await client.post("/v1/vad", files=upload, data={"min_silence_ms": "2000"})
    assert len(default) == 2
    assert joined.status_code == 200
    segments = joined.json()["segments"]
    assert len(segments) == 1
    assert segments[0]["start"] == default[0]["start"]


@in_session_loop
async def test_bad_files_and_values_get_a_clear_4xx() -> None:
    long = wav_bytes(np.zeros(RATE * 6 // 5, np.float32))  # 1.2 s: over max_audio_seconds
    big = wav_bytes(np.zeros(2 * RATE, np.float32))  # 64 KB: over max_upload_bytes
    huge = wav_bytes(np.zeros(5 * RATE, np.float32))  # over the body limit: never read
    short = {"file": ("a.wav", wav_bytes(np.zeros(RATE // 10, np.float32)))}
    cases: list[tuple[dict[str, Any], dict[str, str], int, str]] = [
        ({"file": ("e.wav", b"")}, {}, 400, "audio is empty"),
        ({"file": ("t.txt", b"this is not audio at all")}, {}, 415, "unsupported audio format"),
        ({"file": ("l.wav", long)}, {}, 413, "over the limit of 1 s"),
        ({"file": ("b.wav", big)}, {}, 413, "upload is over the limit of 50000 bytes"),
        ({"file": ("h.wav", huge)}, {}, 413, "the limit for this endpoint is"),
        (short, {"threshold": "2"}, 422, "threshold"),
        (short, {"min_silence_ms": "x"}, 422, "min_silence_ms"),
        ({}, {}, 422, "file"),
    ]
    app = build_app(settings(max_audio_seconds=1, max_upload_bytes=50_000))
    async with running(app) as client:
        for files, data, status, message in cases:
            reply = await client.post("/v1/vad", files=files or None, data=data)
            assert reply.status_code == status, (message, reply.text)
            assert message in reply.text, reply.text


def ready_client(app: Any) -> TestClient:
    client = TestClient(app)
    client.__enter__()
    for _ in range(400):
        if client.get("/ready").status_code == 200:
            return client
    raise AssertionError("morgan-vad never became ready")


def test_a_stream_reports_each_utterance_as_it_ends(
    two_utterances: tuple[np.ndarray, list[tuple[float, float]]],
) -> None:
    audio, expected = two_utterances
    data = pcm(audio)
    client = ready_client(build_app(settings()))
    try:
        with client.websocket_connect("/v1/vad/stream") as ws:
            ws.send_text(json.dumps({"type": "start", "sample_rate": RATE}))
            assert ws.receive_json() == {"type": "started", "sample_rate": RATE}
            frame = 640  # 20 ms
            events: list[dict[str, Any]] = []
            for offset in range(0, len(data), frame):
                ws.send_bytes(data[offset : offset + frame])
                if offset % (frame * 25) == 0:  # a ping every 0.5 s collects what came back
                    ws.send_text(json.dumps({"type": "ping"}))
                    while (message := ws.receive_json())["type"] != "pong":
                        events.append(message)
            ws.send_text(json.dumps({"type": "stop"}))
            while (message := ws.receive_json())["type"] != "stopped":
                events.append(message)
            assert message["duration"] == pytest.approx(len(audio) / RATE, abs=0.001)
    finally:
        client.__exit__(None, None, None)
    kinds = [e["type"] for e in events]
    assert kinds == ["speech_start", "speech_end", "speech_start", "speech_end"], events
    assert_near([(e["start"], e["end"]) for e in events if e["type"] == "speech_end"], expected)
    for event in events:
        # Known as soon as the audio showed it: a start after min_speech_ms of speech, an
        # end after min_silence_ms of silence (plus a window).
        settle = 0.25 if event["type"] == "speech_start" else 0.5
        edge = event["start"] if event["type"] == "speech_start" else event["end"]
        assert event["at"] - edge == pytest.approx(settle, abs=0.12), event


def test_bad_stream_messages_get_an_error_and_the_stream_goes_on(speech: np.ndarray) -> None:
    client = ready_client(build_app(settings(max_frame_bytes=4096)))
    try:
        with client.websocket_connect("/v1/vad/stream") as ws:
            for text, message in [
                ("{nope", "not JSON"),
                ("[1]", "JSON object"),
                (json.dumps({"type": "dance"}), "unknown message type 'dance'"),
                (json.dumps({"type": "start", "sample_rate": 8000}), "16000 Hz"),
                (json.dumps({"type": "start", "threshold": 3}), "threshold 3 is outside"),
                (json.dumps({"type": "start", "min_silence_ms": "long"}), "must be a number"),
            ]:
                ws.send_text(text)
                reply = ws.receive_json()
                assert reply["type"] == "error" and message in reply["message"], (text, reply)
            ws.send_text(json.dumps({"type": "ping"}))
            assert ws.receive_json() == {"type": "pong"}
            ws.send_bytes(b"\x00" * 4097)
            reply = ws.receive_json()
            assert reply["code"] == "frame_too_large", reply
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1009
    finally:
        client.__exit__(None, None, None)


def test_only_service_keys_open_the_stream(consul_server: ConsulServer) -> None:
    store = ApiKeyStore(ConsulClientFactory.from_env(consul_server.addr))
    _, service_key = store.create("vad-caller", scopes=("service",))
    _, user_key = store.create("vad-person", scopes=("user",))
    values = {**local_settings(), "auth_enabled": True}
    app = build_app(VADSettings(**values))
    app.state.api_key_store = store
    client = ready_client(app)
    try:
        for key, refused in ((None, "missing API key"), (user_key, "only service keys")):
            headers = {"X-API-Key": key} if key else {}
            with (
                pytest.raises(WebSocketDisconnect) as closed,
                client.websocket_connect("/v1/vad/stream", headers=headers) as ws,
            ):
                ws.receive_json()
            assert closed.value.code == 1008 and refused in closed.value.reason
        reply = client.post("/v1/vad", files={"file": ("a.wav", wav_bytes(np.zeros(RATE)))},
                            headers={"X-API-Key": user_key})  # fmt: skip
        assert reply.status_code == 403, reply.text
        with client.websocket_connect("/v1/vad/stream", headers={"X-API-Key": service_key}) as ws:
            ws.send_text(json.dumps({"type": "ping"}))
            assert ws.receive_json() == {"type": "pong"}
    finally:
        client.__exit__(None, None, None)
