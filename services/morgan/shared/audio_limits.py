"""What an audio header may claim before any decoding: a few hundred KB of FLAC can claim
gigabytes of samples, so the rate and the channel count are bounded as well as the length."""

from __future__ import annotations

MAX_SAMPLE_RATE = 48_000
MAX_CHANNELS = 2


def header_problem(sample_rate: int, channels: int) -> str | None:
    """Why a header's sample rate or channel count is refused, or None when both are fine."""
    if sample_rate > MAX_SAMPLE_RATE:
        return (
            f"audio claims {sample_rate} Hz; at most {MAX_SAMPLE_RATE} Hz is taken — "
            "resample it (16000 Hz is best for speech)"
        )
    if channels > MAX_CHANNELS:
        return (
            f"audio claims {channels} channels; at most {MAX_CHANNELS} are taken — "
            "send mono (or stereo)"
        )
    return None
