"""Decoding uploads: every supported format, resampling, and every refusal."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from morgan.models.errors import ModelRequestError
from morgan.stt.audio import TARGET_RATE, decode_audio, decode_pcm

from tests.core.audio_samples import forged_flac

pytestmark = pytest.mark.unit


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def encode(samples: np.ndarray, rate: int, fmt: str, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    data = np.stack([samples] * channels, axis=1) if channels > 1 else samples
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[fmt]
    sf.write(buffer, data, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "name"), [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")]
)
def test_each_format_decodes_to_16k_mono(fmt: str, name: str) -> None:
    audio = decode_audio(encode(tone(2.0, 44100), 44100, fmt, channels=2), max_seconds=10)
    assert audio.source_format == name
    assert audio.source_rate == 44100
    assert audio.samples.dtype == np.float32
    assert abs(audio.duration - 2.0) < 0.1
    assert abs(len(audio.samples) / TARGET_RATE - audio.duration) < 0.01
    assert 0.1 < float(np.abs(audio.samples).max()) <= 1.0


def test_pcm_at_8k_is_resampled() -> None:
    pcm = (tone(1.0, 8000) * 32767).astype("<i2").tobytes()
    audio = decode_pcm(pcm, sample_rate=8000, max_seconds=10)
    assert audio.duration == pytest.approx(1.0)
    assert len(audio.samples) == pytest.approx(16000, abs=2)


def refusal(call: object, *args: object, **kwargs: object) -> ModelRequestError:
    with pytest.raises(ModelRequestError) as refused:
        call(*args, **kwargs)  # type: ignore[operator]
    return refused.value


def test_unsupported_format_is_415_listing_formats() -> None:
    error = refusal(decode_audio, b"\x1aE\xdf\xa3" + b"\x00" * 200, max_seconds=10)
    assert error.status == 415 and error.code == "unsupported_audio_format"
    assert "wav, flac, ogg, mp3" in error.message


def test_corrupted_wav_is_400() -> None:
    good = encode(tone(1.0, 16000), 16000, "WAV")
    error = refusal(decode_audio, good[:30], max_seconds=10)
    assert error.status == 400 and error.code == "audio_corrupted"
    assert "wav" in error.message


def test_corrupted_flac_body_is_400() -> None:
    good = encode(tone(1.0, 16000), 16000, "FLAC")
    broken = good[:8] + b"\xff" * 60 + good[68:]
    error = refusal(decode_audio, broken, max_seconds=10)
    assert error.status == 400 and error.code == "audio_corrupted"


def test_empty_audio_is_400() -> None:
    assert refusal(decode_audio, b"", max_seconds=10).code == "audio_empty"
    silent_header = encode(np.zeros(0, dtype=np.float32), 16000, "WAV")
    assert refusal(decode_audio, silent_header, max_seconds=10).code == "audio_empty"


def test_over_the_length_limit_is_413() -> None:
    error = refusal(decode_audio, encode(tone(3.0, 16000), 16000, "WAV"), max_seconds=2)
    assert error.status == 413 and "over the limit of 2 s" in error.message
    pcm = b"\x00\x00" * 16000 * 3
    assert refusal(decode_pcm, pcm, sample_rate=16000, max_seconds=2).status == 413


@pytest.mark.parametrize(
    ("forged", "needle"),
    [({"rate": 192_000}, "claims 192000 Hz"), ({"channels": 8}, "claims 8 channels")],
)
def test_headers_claiming_too_many_samples_are_400(forged: dict[str, int], needle: str) -> None:
    with pytest.raises(ModelRequestError) as err:
        decode_audio(forged_flac(**forged), max_seconds=300)
    assert err.value.status == 400 and needle in err.value.message
    with pytest.raises(ModelRequestError) as long:
        decode_audio(forged_flac(frames=16_000 * 36_000), max_seconds=300)
    assert long.value.status == 413


def test_pcm_refusals() -> None:
    assert refusal(decode_pcm, b"\x00\x00", sample_rate=12345, max_seconds=5).code == (
        "unsupported_sample_rate"
    )
    assert refusal(decode_pcm, b"\x00\x00", sample_rate=None, max_seconds=5).code == (
        "sample_rate_missing"
    )
    assert refusal(decode_pcm, b"\x00\x00\x00", sample_rate=16000, max_seconds=5).code == (
        "audio_corrupted"
    )
    assert refusal(decode_pcm, b"", sample_rate=16000, max_seconds=5).code == "audio_empty"
