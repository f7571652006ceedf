"""An stt and a tts instance killed during spoken turns: core moves each call to the
other instance (a connection refused or reset costs one retry), so every spoken turn is
still transcribed and answered; with speech, but for a reply whose speech stream the
killed tts instance was sending (see the budget below)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.chaos.conftest import Fleet
from tests.chaos.load import audio_load
from tests.chaos.test_core_replicas import assert_nothing_lost
from tests.core.audio_samples import espeak_wav

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.asyncio(loop_scope="session")]  # fmt: skip

KILL_AT_S = 10.0
KILLING_S = 5.0  # the two `docker kill`s, one after the other, over h2's TLS endpoint


async def test_killing_an_stt_and_a_tts_instance_fails_no_spoken_turn(
    fleet: Fleet, tmp_path: Path
) -> None:
    victims = [next(s for s in fleet.deployment.of_role(role) if s.host == "h2")
               for role in ("stt", "tts")]  # fmt: skip
    wav = espeak_wav("What is the weather like today?", tmp_path / "turn.wav")
    load = asyncio.create_task(audio_load("model-kill", fleet.gateway_url, fleet.api_key,
                                          fleet.ca_file, wav, total=40, duration_s=60))  # fmt: skip
    await asyncio.sleep(KILL_AT_S)
    fault = time.monotonic()
    for victim in victims:
        await asyncio.to_thread(fleet.engine(victim).run, "kill", victim.name)
    await asyncio.sleep(20)
    for victim in victims:
        await asyncio.to_thread(fleet.engine(victim).run, "start", victim.name)
    back = [await asyncio.to_thread(fleet.wait_healthy, v, 300) for v in victims]
    report = await load
    again = time.monotonic() - fault
    print(report.summary(KILL_AT_S), f"; {', '.join(v.name for v in victims)} healthy again"
          f" {again:.0f} s after the kill ({max(back):.0f} s after their start)")  # fmt: skip
    warned = [a.warning for a in report.answers if a.warning]
    print(f"[model-kill] {sum(a.spoken for a in report.answers)} of {len(report.answers)}"
          f" answered with speech; warnings: {warned[:3]}")  # fmt: skip
    assert report.failed == [], [(a.status, a.detail) for a in report.failed[:5]]
    assert all(a.transcription for a in report.answers), "a turn came back untranscribed"
    # Budget: a reply whose speech the killed tts instance was streaming comes back with
    # its words and transcription but no audio, and a warning that says so (core does
    # not yet start such a stream again on the other instance). Only turns in flight at
    # the kill may; every other turn is answered with speech.
    silent = [a for a in report.answers if not a.spoken]
    for a in silent:
        assert a.warning and a.warning.startswith("no audio: tts"), a
        assert a.sent_s <= KILL_AT_S + KILLING_S and a.sent_s + a.seconds >= KILL_AT_S, a
    assert_nothing_lost(fleet, report)
