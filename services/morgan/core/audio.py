"""Checking an uploaded audio file before any model sees it: format, size, duration."""

from __future__ import annotations

import io
from dataclasses import dataclass

import soundfile

from morgan.core.config import AUDIO_FORMATS
from morgan.core.exceptions import InvalidInputError, PayloadTooLargeError, UnsupportedMediaError
from morgan.shared.audio_limits import header_problem

_CONTENT_TYPES = {
    "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/vnd.wave": "wav",
    "audio/flac": "flac", "audio/x-flac": "flac",
    "audio/ogg": "ogg", "application/ogg": "ogg", "audio/vorbis": "ogg", "audio/opus": "ogg",
    "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/mpeg3": "mp3", "audio/x-mpeg-3": "mp3",
}  # fmt: skip
_SF_FORMATS = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "FLAC": "flac", "OGG": "ogg",
               "MP3": "mp3"}  # fmt: skip


@dataclass(frozen=True)
class AudioInfo:
    format: str
    duration_s: float
    sample_rate: int
    channels: int


def sniff_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def declared_format(content_type: str | None, filename: str | None) -> str | None:
    if content_type:
        fmt = _CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())
        if fmt:
            return fmt
    if filename and "." in filename:
        ext = filename.rsplit(".", 1)[1].lower()
        if ext in AUDIO_FORMATS:
            return ext
    return None


def inspect_audio(
    data: bytes,
    *,
    content_type: str | None,
    filename: str | None,
    max_bytes: int,
    max_seconds: float,
) -> AudioInfo:
    """Validate an upload; raise 413/415/422 errors that say what to send instead."""
    allowed = ", ".join(AUDIO_FORMATS)
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"audio is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB — "
            "send a shorter recording"
        )
    if not data:
        raise InvalidInputError("the audio file is empty; record something and send it again")
    ct = (content_type or "").split(";")[0].strip().lower()
    declared = declared_format(content_type, filename)
    sniffed = sniff_format(data)
    generic = ct in ("", "application/octet-stream")
    if declared is None and not (generic and sniffed):
        raise UnsupportedMediaError(
            f"unsupported audio type {content_type or 'unknown'!r} (file {filename!r}); "
            f"send one of: {allowed}"
        )
    try:
        info = soundfile.info(io.BytesIO(data))
    except (RuntimeError, soundfile.LibsndfileError, ValueError) as exc:
        raise InvalidInputError(
            f"could not decode the audio as {declared or sniffed or 'audio'} ({exc}); the file "
            f"is corrupted or not really {declared or 'audio'} — send a valid {allowed} file"
        ) from exc
    fmt = _SF_FORMATS.get(info.format)
    if fmt is None:
        raise UnsupportedMediaError(
            f"audio container {info.format} is not supported; send one of: {allowed}"
        )
    if info.frames <= 0 or info.samplerate <= 0:
        raise InvalidInputError("the audio holds no samples; record something and send it again")
    if problem := header_problem(int(info.samplerate), int(info.channels)):
        raise InvalidInputError(problem)
    duration = info.frames / info.samplerate
    if duration > max_seconds:
        raise PayloadTooLargeError(
            f"audio is {duration:.0f} s long; the limit is {max_seconds:.0f} s — "
            "split it into shorter recordings"
        )
    return AudioInfo(fmt, duration, int(info.samplerate), int(info.channels))
