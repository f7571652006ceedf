"""morgan-tts in process with the tiny VITS (Coqui, espeak-ng phonemes, CPU)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from morgan.models.directory import ModelDirectoryError
from morgan.tts.app import build_app
from morgan.tts.config import TTSSettings

from tests.models.conftest import local_settings, running

pytestmark = [pytest.mark.integration, pytest.mark.slow]
in_session_loop = pytest.mark.asyncio(loop_scope="session")

LONG_TEXT = (
    "Good morning. The kitchen lights are on! Your timer is set for ten minutes. "
    "Is there anything else?"
)


def settings(model_dir: Path, **overrides: Any) -> TTSSettings:
    values: dict[str, Any] = {"model_dir": model_dir, **local_settings()}
    values.update(overrides)
    return TTSSettings(**values)


@in_session_loop
async def test_voices_and_wav_speech(model_dir: Path) -> None:
    async with running(build_app(settings(model_dir, voice_aliases={"alloy": "tiny"}))) as client:
        voices = (await client.get("/voices")).json()
        assert voices["voices"] == [
            {"id": "tiny", "language": "en-us", "sample_rate": 16000, "engine": "coqui"}
        ]
        assert voices["aliases"] == {"alloy": "tiny"}

        reply = await client.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "input": "Hello from Morgan.", "voice": "alloy"},
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "audio/wav"
        assert reply.headers["x-voice"] == "tiny"
        samples, rate = sf.read(io.BytesIO(reply.content), dtype="float32")
        assert rate == 16000
        assert 0.2 < len(samples) / rate < 10
        assert float(abs(samples).max()) > 0

        metrics = (await client.get("/metrics")).text
        assert 'morgan_audio_seconds_processed_total{model="tiny",service="morgan-tts"}' in metrics
        assert 'morgan_audio_real_time_factor_count{model="tiny",service="morgan-tts"}' in metrics


@in_session_loop
async def test_long_text_streams_one_chunk_per_sentence(model_dir: Path) -> None:
    app = build_app(settings(model_dir))
    async with running(app) as client:
        from morgan.tts.schemas import SpeechRequest

        service = app.state.speech_service
        voice, fmt, chunks = await service.open_stream(
            SpeechRequest(input=LONG_TEXT, voice="tiny", response_format="pcm")
        )
        pieces = [chunk async for chunk in chunks]
        assert fmt == "pcm" and voice.sample_rate == 16000
        assert len(pieces) == 4  # four sentences, each synthesised and sent on its own
        assert all(len(p) > 0 and len(p) % 2 == 0 for p in pieces)

        reply = await client.post(
            "/v1/audio/speech", json={"input": LONG_TEXT, "voice": "tiny", "response_format": "pcm"}
        )
        assert reply.headers["content-type"] == "audio/pcm"
        assert reply.headers["x-sample-rate"] == "16000"
        assert len(reply.content) % 2 == 0
        whole = await client.post("/v1/audio/speech", json={"input": LONG_TEXT, "voice": "tiny"})
        samples, _ = sf.read(io.BytesIO(whole.content), dtype="int16")
        assert len(samples) * 2 == len(reply.content)  # wav = header + the same pcm


@in_session_loop
async def test_a_sentence_the_voice_cannot_say_is_left_out_not_failed(model_dir: Path) -> None:
    """Pieces whose every character the voice's tokenizer drops (a dash and an
    apostrophe; an Arabic-Indic digit: alphanumeric, but no phoneme of this English
    voice) have nothing to synthesise, and VITS fails on such input: they are left out
    and the rest is spoken, rather than the stream breaking mid-answer."""
    app = build_app(settings(model_dir))
    async with running(app) as client:
        from morgan.tts.schemas import SpeechRequest

        service = app.state.speech_service
        for text in ("Hello there. - '", "Hello there. \u0663"):
            _, _, chunks = await service.open_stream(
                SpeechRequest(input=text, voice="tiny", response_format="pcm")
            )
            pieces = [chunk async for chunk in chunks]
            assert len(pieces) == 1 and len(pieces[0]) > 0, (text, [len(p) for p in pieces])
        reply = await client.post(
            "/v1/audio/speech", json={"input": "Fine. \u0663 Thanks.", "voice": "tiny"}
        )
        assert reply.status_code == 200, reply.text
        samples, rate = sf.read(io.BytesIO(reply.content), dtype="float32")
        assert 0.2 < len(samples) / rate < 10


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"input": "", "voice": "tiny"}, 400, "input is empty"),
        ({"input": "   ", "voice": "tiny"}, 400, "input is empty"),
        ({"input": "?!...", "voice": "tiny"}, 400, "no letters or digits"),
        ({"input": "x" * 301, "voice": "tiny"}, 413, "over the limit of 300"),
        ({"input": "Hello.", "voice": "nobody"}, 400, "unknown voice 'nobody'"),
        ({"input": "Hello.", "voice": "tiny", "response_format": "mp3"}, 400, "use wav or pcm"),
        ({"input": "Hello.", "voice": "tiny", "speed": 2.0}, 400, "speed 2 is not supported"),
        ({"voice": "tiny"}, 422, "input"),
    ],
)
@in_session_loop
async def test_bad_requests(
    model_dir: Path, body: dict[str, Any], status: int, needle: str
) -> None:
    async with running(build_app(settings(model_dir, max_input_chars=300))) as client:
        reply = await client.post("/v1/audio/speech", json=body)
        assert reply.status_code == status, reply.text
        assert needle in reply.json()["error"]


def test_no_voice_installed_fails_at_start_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelDirectoryError, match="morgan models import"):
        build_app(settings(tmp_path))


def test_incomplete_voice_is_refused(tmp_path: Path, model_dir: Path) -> None:
    broken = tmp_path / "tts" / "broken"
    shutil.copytree(model_dir / "tts" / "tiny", broken)
    (broken / "model.pth").unlink()
    with pytest.raises(ModelDirectoryError, match="missing checkpoint"):
        build_app(settings(tmp_path, voices=["broken"]))
