"""Upload checks, sentence splitting and the in-flight limit (no servers)."""

from __future__ import annotations

import pytest
from morgan.core.audio import inspect_audio, sniff_format
from morgan.core.exceptions import (
    InvalidInputError,
    OverloadedError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from morgan.core.limiter import InflightLimiter
from morgan.core.sentences import SentenceSplitter

from tests.core.audio_samples import corrupted_wav, encode, forged_flac, silence_wav

pytestmark = pytest.mark.unit
MB = 1024 * 1024


def _inspect(data: bytes, ct: str | None = "audio/wav", name: str | None = "a.wav",
             max_seconds: float = 300) -> object:  # fmt: skip
    return inspect_audio(data, content_type=ct, filename=name, max_bytes=25 * MB,
                         max_seconds=max_seconds)  # fmt: skip


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3"])
def test_every_allowed_format_is_read_with_its_duration(fmt: str) -> None:
    data = encode(silence_wav(2.0, rate=16000), fmt)
    assert sniff_format(data) == fmt
    info = inspect_audio(data, content_type=f"audio/{'mpeg' if fmt == 'mp3' else fmt}",
                         filename=f"x.{fmt}", max_bytes=25 * MB, max_seconds=300)  # fmt: skip
    assert info.format == fmt
    assert info.duration_s == pytest.approx(2.0, abs=0.15)


def test_wav_duration_and_limits() -> None:
    info = _inspect(silence_wav(3.0))
    assert info.duration_s == pytest.approx(3.0)  # type: ignore[attr-defined]
    with pytest.raises(PayloadTooLargeError, match="limit is 2 s"):
        _inspect(silence_wav(3.0), max_seconds=2)
    with pytest.raises(PayloadTooLargeError, match="MB"):
        inspect_audio(b"RIFF" + b"\0" * (2 * MB), content_type="audio/wav", filename="a.wav",
                      max_bytes=MB, max_seconds=300)  # fmt: skip


def test_headers_claiming_too_many_samples_are_refused_before_decoding() -> None:
    def flac(data: bytes, max_seconds: float = 300) -> object:
        return _inspect(data, ct="audio/flac", name="a.flac", max_seconds=max_seconds)

    assert len(forged_flac(frames=16_000 * 36_000)) < 1000  # 10 hours claimed in < 1 KB
    with pytest.raises(PayloadTooLargeError, match="limit is 300 s"):
        flac(forged_flac(frames=16_000 * 36_000))
    with pytest.raises(InvalidInputError, match="claims 192000 Hz; at most 48000"):
        flac(forged_flac(rate=192_000))
    with pytest.raises(InvalidInputError, match="claims 8 channels; at most 2"):
        flac(forged_flac(channels=8))
    assert flac(forged_flac()).duration_s == pytest.approx(1.0)  # type: ignore[attr-defined]


def test_bad_uploads_get_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="corrupted"):
        _inspect(corrupted_wav())
    with pytest.raises(InvalidInputError, match="empty"):
        _inspect(b"")
    with pytest.raises(UnsupportedMediaError, match="wav, flac, ogg, mp3"):
        _inspect(b"hello there", ct="text/plain", name="notes.txt")
    # A generic content type is fine when the bytes are recognisably audio.
    assert _inspect(silence_wav(1.0), ct="application/octet-stream", name=None)


def test_sentence_splitter_emits_complete_sentences_only() -> None:
    s = SentenceSplitter()
    assert s.feed("Hello there") == []
    assert s.feed(". How are") == ["Hello there."]
    assert s.feed(" you? I am") == ["How are you?"]
    assert s.feed(' fine!" Good') == ['I am fine!"']
    assert s.flush() == "Good"
    assert s.flush() is None
    assert s.feed("Version 2.5 is out. ") == ["Version 2.5 is out."]


def test_limiter_refuses_beyond_limit_and_frees_slots() -> None:
    lim = InflightLimiter(2, retry_after_s=3)
    with lim.slot(), lim.slot():
        with pytest.raises(OverloadedError) as info, lim.slot():
            pass
        assert info.value.headers == {"Retry-After": "3"}
        assert lim.inflight == 2
    assert lim.inflight == 0 and lim.rejected == 1
    with lim.slot():
        assert lim.inflight == 1
