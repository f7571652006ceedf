"""The speech detector's state machine on made-up probabilities (one per 32 ms window)."""

from __future__ import annotations

from morgan.vad.detector import DetectorConfig, SpeechDetector, SpeechEvent

WINDOW_S = 512 / 16000


def run(probabilities: list[float], config: DetectorConfig) -> list[SpeechEvent]:
    detector = SpeechDetector(config)
    events: list[SpeechEvent] = []
    for p in probabilities:
        events += detector.feed(p)
    return events + detector.finish()


def windows(seconds: float) -> int:
    return round(seconds / WINDOW_S)


NO_PAD = DetectorConfig(threshold=0.5, min_speech_ms=250, min_silence_ms=500, speech_pad_ms=0)


def test_speech_between_silences_starts_and_ends_where_it_is() -> None:
    probs = [0.0] * windows(1.0) + [0.9] * windows(2.0) + [0.0] * windows(1.0)
    events = run(probs, NO_PAD)
    assert [e.kind for e in events] == ["start", "end"]
    start, end = events
    assert abs(start.start - 1.0) < WINDOW_S
    # The start is known once speech has lasted min_speech_ms, not before.
    assert abs(start.at - (start.start + 0.25)) <= WINDOW_S
    assert end.start == start.start
    assert abs(end.end - 3.0) < WINDOW_S  # type: ignore[operator]
    # The end is known once the silence has lasted min_silence_ms.
    assert abs(end.at - (3.0 + 0.5)) <= WINDOW_S


def test_a_blip_shorter_than_min_speech_is_not_speech() -> None:
    probs = [0.0] * 10 + [0.95] * windows(0.15) + [0.0] * 30
    assert run(probs, NO_PAD) == []


def test_a_pause_shorter_than_min_silence_does_not_end_the_utterance() -> None:
    probs = [0.9] * windows(1.0) + [0.0] * windows(0.3) + [0.9] * windows(1.0) + [0.0] * 40
    events = run(probs, NO_PAD)
    assert [e.kind for e in events] == ["start", "end"]
    assert abs(events[1].end - 2.3) < 2 * WINDOW_S  # type: ignore[operator]


def test_probabilities_between_the_thresholds_keep_the_state() -> None:
    # 0.4 is below the threshold (0.5) but above the off threshold (0.35): speech goes on.
    probs = [0.9] * windows(0.5) + [0.4] * windows(1.0) + [0.1] * windows(0.6)
    events = run(probs, NO_PAD)
    assert [e.kind for e in events] == ["start", "end"]
    assert abs(events[1].end - 1.5) < 2 * WINDOW_S  # type: ignore[operator]
    # ...and before speech, 0.4 neither starts nor resets a rise.
    assert run([0.4] * 100, NO_PAD) == []


def test_speech_open_at_the_end_is_closed_at_the_last_sample() -> None:
    probs = [0.0] * windows(0.5) + [0.9] * windows(1.0)
    events = run(probs, NO_PAD)
    assert [e.kind for e in events] == ["start", "end"]
    assert events[1].end == len(probs) * WINDOW_S


def test_padding_widens_segments_without_overlapping_them() -> None:
    padded = DetectorConfig(threshold=0.5, min_speech_ms=64, min_silence_ms=64, speech_pad_ms=200)
    probs = [0.0] * 20 + [0.9] * 10 + [0.0] * 3 + [0.9] * 10 + [0.0] * 20
    events = [e for e in run(probs, padded) if e.kind == "end"]
    assert len(events) == 2
    first, second = events
    assert abs(first.start - (20 * WINDOW_S - 0.2)) < 1e-6
    assert second.start >= first.end  # type: ignore[operator]


def test_event_messages_carry_rounded_times() -> None:
    start = SpeechEvent("start", start=1.23456, end=None, at=1.5)
    end = SpeechEvent("end", start=1.23456, end=2.0004, at=2.5)
    assert start.message() == {"type": "speech_start", "start": 1.235, "at": 1.5}
    assert end.message() == {"type": "speech_end", "start": 1.235, "end": 2.0, "at": 2.5}
