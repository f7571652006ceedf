"""poll(): the one bounded, logged wait of the lab and `morgan verify`."""

from __future__ import annotations

import logging

import pytest
from morgan.lab.polling import NotYet, PollTimeout, poll

pytestmark = pytest.mark.unit


def test_returns_the_probe_value_once_reached(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    def probe() -> str:
        seen.append(len(seen))
        if len(seen) < 3:
            raise NotYet(f"try {len(seen)} not ready")
        return "ready"

    with caplog.at_level(logging.INFO, logger="morgan.lab.polling"):
        assert poll(probe, what="thing", timeout=5, interval=0.01) == "ready"
    assert len(seen) == 3
    # every failed try is logged with what it saw
    assert [r.getMessage() for r in caplog.records] == [
        "thing: try 1: try 1 not ready",
        "thing: try 2: try 2 not ready",
    ]


def test_timeout_names_the_last_try() -> None:
    def probe() -> None:
        raise NotYet("HTTP 503: no core")

    expected = r"gateway: not within 0 s \(last try: HTTP 503: no core\)"
    with pytest.raises(PollTimeout, match=expected):
        poll(probe, what="gateway", timeout=0.2, interval=0.05)


def test_listed_errors_are_retried_others_propagate() -> None:
    calls: list[str] = []

    def refused_then_broken() -> None:
        calls.append("x")
        if len(calls) == 1:
            raise ConnectionRefusedError("refused")
        raise KeyError("a bug, not a state")

    with pytest.raises(KeyError):
        poll(refused_then_broken, what="x", timeout=5, interval=0.01, errors=(OSError,))
    assert len(calls) == 2
