"""Audio encodings morgan-tts answers with: WAV (16-bit PCM) and raw 16-bit PCM."""

from __future__ import annotations

import struct

import numpy as np

# RIFF and data sizes of a WAV whose length is unknown when the header is sent; readers
# that stream (browsers, ffmpeg, soundfile) read until the end of the data.
_UNKNOWN_SIZE = 0xFFFFFFFF


def pcm16(samples: np.ndarray) -> bytes:
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()


def wav_header(sample_rate: int, data_bytes: int | None = None, channels: int = 1) -> bytes:
    """A 44-byte PCM WAV header; ``data_bytes=None`` marks a streamed WAV of unknown length."""
    block_align = channels * 2
    if data_bytes is None:
        riff_size, data_size = _UNKNOWN_SIZE, _UNKNOWN_SIZE
    else:
        riff_size, data_size = 36 + data_bytes, data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack(
            "<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16
        )
        + b"data"
        + struct.pack("<I", data_size)
    )


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    data = pcm16(samples)
    return wav_header(sample_rate, len(data)) + data
