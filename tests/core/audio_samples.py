"""Audio made for tests: speech from espeak-ng, silence, and broken files."""

from __future__ import annotations

import io
import subprocess
import wave
from pathlib import Path

import numpy as np
import soundfile


def espeak_wav(text: str, path: Path) -> bytes:
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True, timeout=30)
    return path.read_bytes()


def silence_wav(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return buf.getvalue()


def encode(wav: bytes, fmt: str) -> bytes:
    """Re-encode a wav as flac / ogg / mp3 with libsndfile."""
    data, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    buf = io.BytesIO()
    subtype = {"flac": "PCM_16", "ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}[fmt]
    soundfile.write(buf, np.asarray(data), rate, format=fmt.upper(), subtype=subtype)
    return buf.getvalue()


def corrupted_wav() -> bytes:
    good = silence_wav(1.0)
    return good[:12] + b"\xde\xad\xbe\xef" * 64
