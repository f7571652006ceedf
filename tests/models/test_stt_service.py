"""morgan-stt in process with the tiny Whisper (faster-whisper, CPU) and espeak-ng speech."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from morgan.stt.app import build_app
from morgan.stt.config import STTSettings
from morgan.stt.engine import whisper_languages

from tests.models.conftest import local_settings, running

pytestmark = [pytest.mark.integration, pytest.mark.slow]
in_session_loop = pytest.mark.asyncio(loop_scope="session")


def settings(model_dir: Path, **overrides: Any) -> STTSettings:
    values: dict[str, Any] = {"model_dir": model_dir, "model": "tiny", **local_settings()}
    values.update(overrides)
    return STTSettings(**values)


def reencode(wav: bytes, fmt: str, rate: int | None = None) -> bytes:
    data, source_rate = sf.read(io.BytesIO(wav), dtype="float32")
    buffer = io.BytesIO()
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[fmt]
    sf.write(buffer, data, rate or source_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def pcm16k(wav: bytes) -> bytes:
    import soxr

    data, rate = sf.read(io.BytesIO(wav), dtype="float32")
    resampled = soxr.resample(data, rate, 16000)
    return (np.clip(resampled, -1, 1) * 32767).astype("<i2").tobytes()


@in_session_loop
async def test_every_format_and_response_format(model_dir: Path, speech_wav: bytes) -> None:
    duration = sf.info(io.BytesIO(speech_wav)).duration
    async with running(build_app(settings(model_dir))) as client:
        for fmt in ("WAV", "FLAC", "OGG", "MP3"):
            upload = speech_wav if fmt == "WAV" else reencode(speech_wav, fmt)
            reply = await client.post(
                "/v1/audio/transcriptions",
                files={"file": (f"speech.{fmt.lower()}", upload)},
                data={"model": "whisper-1", "response_format": "verbose_json"},
            )
            assert reply.status_code == 200, (fmt, reply.text)
            body = reply.json()
            assert body["duration"] == pytest.approx(duration, abs=0.1), fmt
            assert body["language"] in whisper_languages()
            assert isinstance(body["text"], str) and body["text"]
            assert body["segments"] and all(
                0 <= s["start"] <= s["end"] <= body["duration"] for s in body["segments"]
            )

        plain = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", speech_wav)})
        assert set(plain.json()) == {"text"}
        text = await client.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", speech_wav)},
            data={"response_format": "text"},
        )
        assert text.headers["content-type"].startswith("text/plain")
        assert text.text.strip() == plain.json()["text"]

        metrics = (await client.get("/metrics")).text
        assert 'morgan_audio_seconds_processed_total{model="tiny",service="morgan-stt"}' in metrics
        assert "morgan_audio_real_time_factor_count" in metrics


@in_session_loop
async def test_language_given_or_detected_and_vad(model_dir: Path, speech_wav: bytes) -> None:
    async with running(build_app(settings(model_dir))) as client:
        german = await client.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", speech_wav)},
            data={"language": "de", "response_format": "verbose_json"},
        )
        assert german.json()["language"] == "de"
        assert german.json()["language_probability"] == 1.0
        detected = await client.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", speech_wav)},
            data={"response_format": "verbose_json"},
        )
        body = detected.json()
        assert body["language"] in whisper_languages()
        assert 0 < body["language_probability"] <= 1
        with_vad = await client.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", speech_wav)},
            data={"vad_filter": "true", "response_format": "verbose_json"},
        )
        assert with_vad.status_code == 200
        silence = io.BytesIO()
        sf.write(silence, np.zeros(32000, dtype=np.float32), 16000, format="WAV")
        quiet = await client.post(
            "/v1/audio/transcriptions",
            files={"file": ("s.wav", silence.getvalue())},
            data={"vad_filter": "true", "response_format": "verbose_json"},
        )
        assert quiet.status_code == 200
        assert quiet.json()["segments"] == [] and quiet.json()["text"] == ""


@in_session_loop
async def test_json_endpoint_with_file_and_pcm(model_dir: Path, speech_wav: bytes) -> None:
    async with running(build_app(settings(model_dir))) as client:
        as_file = await client.post(
            "/transcribe", json={"audio": base64.b64encode(speech_wav).decode(), "language": "en"}
        )
        assert as_file.status_code == 200, as_file.text
        pcm = pcm16k(speech_wav)
        as_pcm = await client.post(
            "/transcribe",
            json={
                "audio": base64.b64encode(pcm).decode(),
                "format": "pcm",
                "sample_rate": 16000,
                "language": "en",
            },
        )
        assert as_pcm.status_code == 200, as_pcm.text
        assert as_pcm.json()["duration"] == pytest.approx(len(pcm) / 2 / 16000, abs=0.01)
        assert as_pcm.json()["language"] == "en"
        assert as_file.json()["processing_seconds"] > 0


def _corrupted_flac(speech_wav: bytes) -> bytes:
    good = reencode(speech_wav, "FLAC")
    return good[:8] + b"\xff" * 60 + good[68:]


@pytest.mark.parametrize(
    ("case", "status", "needle"),
    [
        ("unsupported", 415, "unsupported audio format"),
        ("corrupted", 400, "corrupted flac audio"),
        ("empty", 400, "audio is empty"),
        ("too_long", 413, "over the limit of 2 s"),
        ("too_big", 413, "over the limit of"),
        ("language", 400, "unknown language 'klingon'"),
        ("response_format", 400, "response_format 'srt' is not supported"),
        ("no_file", 422, "file"),
    ],
)
@in_session_loop
async def test_multipart_refusals(
    model_dir: Path, speech_wav: bytes, case: str, status: int, needle: str
) -> None:
    upload: bytes | None = speech_wav
    data: dict[str, str] = {}
    if case == "unsupported":
        upload = b"\x1aE\xdf\xa3" + b"\x00" * 500
    elif case == "corrupted":
        upload = _corrupted_flac(speech_wav)
    elif case == "empty":
        upload = b""
    elif case == "too_big":
        upload = speech_wav + b"\x00" * 70000
    elif case == "language":
        data["language"] = "klingon"
    elif case == "response_format":
        data["response_format"] = "srt"
    elif case == "no_file":
        upload = None
    app = build_app(settings(model_dir, max_audio_seconds=2.0, max_upload_bytes=200_000))
    async with running(app) as client:
        files = {"file": ("clip", upload)} if upload is not None else None
        reply = await client.post("/v1/audio/transcriptions", files=files, data=data)
        assert reply.status_code == status, reply.text
        assert needle in reply.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"audio": "!!!not base64!!!"}, 400, "not valid base64"),
        (
            {
                "audio": base64.b64encode(b"\x00\x00" * 100).decode(),
                "format": "pcm",
                "sample_rate": 12345,
            },
            400,
            "wrong sample rate 12345",
        ),
        (
            {"audio": base64.b64encode(b"\x00\x00" * 100).decode(), "format": "pcm"},
            400,
            "sample_rate is required",
        ),
        (
            {
                "audio": base64.b64encode(b"\x00" * 3).decode(),
                "format": "pcm",
                "sample_rate": 16000,
            },
            400,
            "not a whole number of 16-bit samples",
        ),
        (
            {
                "audio": base64.b64encode(b"\x00\x00" * 16000 * 3).decode(),
                "format": "pcm",
                "sample_rate": 16000,
            },
            413,
            "over the limit of 2 s",
        ),
        ({"audio": base64.b64encode(b"plain text").decode()}, 415, "unsupported audio format"),
        ({"audio": "", "format": "ogg"}, 422, "format"),
    ],
)
@in_session_loop
async def test_json_refusals(
    model_dir: Path, body: dict[str, Any], status: int, needle: str
) -> None:
    async with running(build_app(settings(model_dir, max_audio_seconds=2.0))) as client:
        reply = await client.post("/transcribe", json=body)
        assert reply.status_code == status, reply.text
        assert needle in reply.json()["error"]


@in_session_loop
async def test_a_body_over_the_limit_is_413_before_it_is_read(model_dir: Path) -> None:
    limits = settings(model_dir, max_upload_bytes=64 * 1024)
    async with running(build_app(limits)) as client:
        huge = b"\x00" * (limits.max_request_bytes() + 1)
        for path in ("/transcribe", "/v1/audio/transcriptions"):
            reply = await client.post(path, content=huge,
                                      headers={"content-type": "application/json"})  # fmt: skip
            assert reply.status_code == 413, (path, reply.text)
            assert "the limit for this endpoint is 0.15 MB" in reply.json()["error"]


def test_websocket_streams_partials_then_a_final(model_dir: Path, speech_wav: bytes) -> None:
    pcm = pcm16k(speech_wav)
    app = build_app(settings(model_dir, partial_interval_seconds=0.5))
    with TestClient(app) as client:
        for _ in range(200):
            if client.get("/ready").status_code == 200:
                break
        with client.websocket_connect("/ws/transcribe") as ws:
            ws.send_text(json.dumps({"type": "start", "sample_rate": 16000, "language": "en"}))
            assert ws.receive_json() == {"type": "started", "sample_rate": 16000, "language": "en"}
            step = 16000  # 0.5 s of 16-bit samples
            for offset in range(0, len(pcm), step):
                ws.send_bytes(pcm[offset : offset + step])
            ws.send_text(json.dumps({"type": "stop"}))
            messages = []
            while True:
                message = ws.receive_json()
                messages.append(message)
                if message["type"] == "final":
                    break
            partials = [m for m in messages if m["type"] == "partial"]
            final = messages[-1]
            assert partials, "at least one partial result before the final"
            assert all(isinstance(p["text"], str) and p["duration"] > 0 for p in partials)
            assert final["language"] == "en"
            assert final["duration"] == pytest.approx(len(pcm) / 32000, abs=0.01)

            ws.send_text(
                json.dumps({"type": "audio", "data": base64.b64encode(pcm[:32000]).decode()})
            )
            ws.send_text(json.dumps({"type": "stop"}))
            second = ws.receive_json()
            while second["type"] == "partial":
                second = ws.receive_json()
            assert second["type"] == "final" and second["duration"] == pytest.approx(1.0)


def test_websocket_refusals(model_dir: Path) -> None:
    app = build_app(settings(model_dir, max_audio_seconds=1.0))
    with TestClient(app) as client, client.websocket_connect("/ws/transcribe") as ws:
        ws.send_text("{nope")
        assert "not JSON" in ws.receive_json()["message"]
        ws.send_text(json.dumps({"type": "start", "sample_rate": 11111}))
        error = ws.receive_json()
        assert error["type"] == "error" and "wrong sample rate 11111" in error["message"]
        ws.send_text(json.dumps({"type": "dance"}))
        assert "unknown message type 'dance'" in ws.receive_json()["message"]
        ws.send_text(json.dumps({"type": "start", "language": "xx"}))
        assert "unknown language 'xx'" in ws.receive_json()["message"]
        ws.send_text(json.dumps({"type": "ping"}))
        assert ws.receive_json() == {"type": "pong"}
        ws.send_bytes(b"\x00\x00" * 16000 * 2)
        error = ws.receive_json()
        assert error["code"] == "audio_too_long"
