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
# One spoken turn every 3 s: what the stt and tts instance left carry while the other two
# load their models again on the same two cores. At 40 over 60 s a whole `make test` run
# (spoken p50 2.7 s, against 1.0 s on an idle lab) had three turns wait past
# stt_timeout_seconds (30 s) while the restarted instances loaded.
LOAD_TURNS, LOAD_S = 20, 60.0
NOTHING_TO_SPEAK = "input has no letters or digits to speak"


async def test_killing_an_stt_and_a_tts_instance_fails_no_spoken_turn(
    fleet: Fleet, tmp_path: Path
) -> None:
    victims = [next(s for s in fleet.deployment.of_role(role) if s.host == "h2")
               for role in ("stt", "tts")]  # fmt: skip
    wav = espeak_wav("What is the weather like today?", tmp_path / "turn.wav")
    started = time.monotonic()
    load = asyncio.create_task(audio_load("model-kill", fleet.gateway_url, fleet.api_key,
                                          fleet.ca_file, wav, total=LOAD_TURNS,
                                          duration_s=LOAD_S))  # fmt: skip
    await asyncio.sleep(KILL_AT_S)
    fault = time.monotonic()
    for victim in victims:
        await asyncio.to_thread(fleet.engine(victim).run, "kill", victim.name)
    # The two `docker kill`s, one after the other over h2's TLS endpoint, take seconds on
    # a busy machine: a tts call sent before the second returned may meet a dying instance.
    killed_s = time.monotonic() - started
    print(f"[model-kill] the kills ran from {KILL_AT_S:.1f} s to {killed_s:.1f} s")
    await asyncio.sleep(20)
    # Started again one at a time, each healthy before the next, as an operator brings a
    # host's services back: on the lab's two shared cores, two speech models loading at
    # once would also starve the instances that are serving (separate hosts would not).
    back, restart_s = [], time.monotonic() - started
    for victim in victims:
        await asyncio.to_thread(fleet.engine(victim).run, "start", victim.name)
        back.append(await asyncio.to_thread(fleet.wait_healthy, victim, 300))
    again = time.monotonic() - fault
    report = await load
    print(report.summary(KILL_AT_S), f"; {', '.join(v.name for v in victims)} started again"
          f" {restart_s:.0f} s in, healthy {again:.0f} s after the kill (each"
          f" {', '.join(f'{b:.0f}' for b in back)} s after its start)")  # fmt: skip
    warned = [a.warning for a in report.answers if a.warning]
    print(f"[model-kill] {sum(a.spoken for a in report.answers)} of {len(report.answers)}"
          f" answered with speech; warnings: {warned[:3]}")  # fmt: skip
    assert not report.failed, report.why_failed(KILL_AT_S)
    assert all(a.transcription for a in report.answers), "a turn came back untranscribed"
    # Budget: a reply whose speech the killed tts instance was sending comes back with its
    # words and transcription but no audio, and a warning that says so. Only turns in
    # flight while the kills ran may; every other turn is answered with speech, unless the
    # tiny test model's reply has nothing to speak (no letter or digit: tts refuses it).
    silent = [a for a in report.answers if not a.spoken]
    for a in silent:
        assert a.warning and a.warning.startswith("no audio: tts"), a
        if NOTHING_TO_SPEAK in a.warning:
            assert not any(ch.isalnum() for ch in a.reply or ""), a
            continue
        assert a.sent_s <= killed_s and a.sent_s + a.seconds >= KILL_AT_S, a
    assert_nothing_lost(fleet, report)
