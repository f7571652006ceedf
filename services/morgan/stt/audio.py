"""Decoding uploaded audio to 16 kHz mono float32, with every refusal a clear 4xx."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from morgan.models.errors import ModelRequestError
from morgan.shared.audio_limits import header_problem

TARGET_RATE = 16000
SUPPORTED_FORMATS = ("wav", "flac", "ogg", "mp3")
PCM_SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, TARGET_RATE
    duration: float
    source_format: str
    source_rate: int


def sniff_format(data: bytes) -> str | None:
    """The container format from the first bytes, or None when it is not one we take."""
    head = data[:12]
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def _too_long(duration: float, max_seconds: float) -> ModelRequestError:
    return ModelRequestError(
        413,
        f"audio is {duration:.1f} s long, over the limit of {max_seconds:g} s; "
        "send a shorter clip or split it",
        code="audio_too_long",
        param="file",
    )


def _to_target_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == TARGET_RATE:
        return samples.astype(np.float32, copy=False)
    import soxr

    return np.asarray(soxr.resample(samples, rate, TARGET_RATE), dtype=np.float32)


def decode_audio(data: bytes, *, max_seconds: float) -> DecodedAudio:
    """Decode WAV, FLAC, Ogg or MP3 bytes; refuse unsupported, corrupted, empty, too long."""
    import soundfile as sf

    if not data:
        raise ModelRequestError(
            400,
            "audio is empty: send a WAV, FLAC, Ogg or MP3 file",
            code="audio_empty",
            param="file",
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise ModelRequestError(
            415,
            "unsupported audio format: send one of "
            f"{', '.join(SUPPORTED_FORMATS)} (or raw 16-bit PCM with format=pcm and "
            "sample_rate)",
            code="unsupported_audio_format",
            param="file",
        )
    try:
        info = sf.info(io.BytesIO(data))
        if problem := header_problem(int(info.samplerate), int(info.channels)):
            raise ModelRequestError(400, problem, code="audio_header_refused", param="file")
        if info.duration > max_seconds:
            raise _too_long(info.duration, max_seconds)
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except ModelRequestError:
        raise
    except Exception as exc:
        raise ModelRequestError(
            400,
            f"corrupted {fmt} audio: it cannot be decoded ({exc}); re-encode the file",
            code="audio_corrupted",
            param="file",
        ) from exc
    if samples.shape[0] == 0:
        raise ModelRequestError(
            400,
            f"{fmt} audio holds no samples: send a clip with sound",
            code="audio_empty",
            param="file",
        )
    if not np.isfinite(samples).all():
        raise ModelRequestError(
            400,
            f"corrupted {fmt} audio: samples are not finite numbers",
            code="audio_corrupted",
            param="file",
        )
    mono = samples.mean(axis=1)
    duration = mono.shape[0] / rate
    if duration > max_seconds:
        raise _too_long(duration, max_seconds)
    return DecodedAudio(_to_target_rate(mono, int(rate)), duration, fmt, int(rate))


def check_pcm_rate(sample_rate: int | None) -> int:
    if sample_rate is None:
        raise ModelRequestError(
            400,
            "sample_rate is required for pcm audio: one of "
            f"{', '.join(map(str, PCM_SAMPLE_RATES))}",
            code="sample_rate_missing",
            param="sample_rate",
        )
    if sample_rate not in PCM_SAMPLE_RATES:
        raise ModelRequestError(
            400,
            f"wrong sample rate {sample_rate} Hz for pcm audio: use one of "
            f"{', '.join(map(str, PCM_SAMPLE_RATES))} (16000 is best)",
            code="unsupported_sample_rate",
            param="sample_rate",
        )
    return sample_rate


def decode_pcm(data: bytes, *, sample_rate: int | None, max_seconds: float) -> DecodedAudio:
    """Raw signed 16-bit little-endian mono PCM at ``sample_rate``."""
    rate = check_pcm_rate(sample_rate)
    if not data:
        raise ModelRequestError(
            400, "audio is empty: send 16-bit PCM samples", code="audio_empty", param="audio"
        )
    if len(data) % 2:
        raise ModelRequestError(
            400,
            f"corrupted pcm audio: {len(data)} bytes is not a whole number of 16-bit samples",
            code="audio_corrupted",
            param="audio",
        )
    duration = len(data) / 2 / rate
    if duration > max_seconds:
        raise _too_long(duration, max_seconds)
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    return DecodedAudio(_to_target_rate(samples, rate), duration, "pcm", rate)
