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


def forged_flac(
    rate: int | None = None, channels: int | None = None, frames: int | None = None
) -> bytes:
    """A one-second FLAC whose STREAMINFO header claims another sample rate, channel count
    or length (a small upload that would decode to far more samples than it holds)."""
    data = bytearray(encode(silence_wav(1.0, rate=16000), "flac"))
    at = 8 + 10  # "fLaC", the block header, then block sizes (4) and frame sizes (6)
    bits = int.from_bytes(data[at : at + 8], "big")  # rate:20 channels-1:3 bps-1:5 frames:36
    old_rate, old_ch, bps, old_frames = bits >> 44, (bits >> 41) & 7, (bits >> 36) & 31, bits
    old_frames &= (1 << 36) - 1
    bits = ((rate or old_rate) << 44) | ((channels - 1 if channels else old_ch) << 41)
    bits |= (bps << 36) | (old_frames if frames is None else frames)
    data[at : at + 8] = bits.to_bytes(8, "big")
    return bytes(data)
