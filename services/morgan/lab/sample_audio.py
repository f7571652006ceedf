"""The audio the checks and lab tests speak to a stack: no model needed to make it."""

from __future__ import annotations

import io
import wave


def one_second_wav() -> bytes:
    """One second of 16 kHz mono 16-bit PCM, a constant low level: enough for a spoken turn
    (stt transcribes something, tts answers) through a stack with the tiny test models."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x10" * 16000)
    return buf.getvalue()
