"""A service moved to another host on the lab, as docs/operations/scaling.md says: the
stack file's pin changed, `morgan deploy`. The instance on the new host is made, runs
and serves; the one on the old host is removed and leaves Consul's catalogue; the move
back is the same step again."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path

import pytest
import websockets
from morgan.deploy.backup import Fleet as StackApi
from morgan.deploy.rollout import DeployReport, deploy
from morgan.lab import stack as st
from morgan.lab.polling import NotYet, poll

from infra.config import MorganStackConfig
from tests.chaos.conftest import ROOT, Fleet
from tests.core.audio_samples import espeak_wav
from tests.core.hands_free_client import Session, silence, speech_pcm

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.asyncio(loop_scope="session")]  # fmt: skip

VAD = "morgan-vad"


def _with_pin(config: MorganStackConfig, service: str, pin: dict[str, int]) -> MorganStackConfig:
    data = config.model_dump()
    data["services"][service]["pin"] = pin
    return MorganStackConfig.model_validate(data)


def _passing_nodes(api: StackApi, service: str) -> list[str]:
    _index, entries = api.consul().health.service(service, passing=True)
    return sorted(e["Node"]["Node"] for e in entries)


def _wait_passing(api: StackApi, service: str, nodes: list[str]) -> float:
    started = time.monotonic()

    def as_planned() -> None:
        if (now := _passing_nodes(api, service)) != nodes:
            raise NotYet(f"passing on {now}")

    poll(as_planned, what=f"{service} passing on {nodes}", timeout=120, interval=1)
    return time.monotonic() - started


def _vad_containers(fleet: Fleet, host: str) -> list[str]:
    return fleet.engines[host].text("ps", "-a", "--filter", "label=morgan.role=vad",
                                    "--format", "{{.Names}}", timeout=60).split()  # fmt: skip


async def _voice_activity(fleet: Fleet, tmp_path: Path) -> list[str]:
    """A hands-free session's events until core says the person stopped speaking (each of
    those events comes from a morgan-vad instance)."""
    speech = speech_pcm(espeak_wav("Which host is listening now?", tmp_path / "turn.wav"))
    context = ssl.create_default_context(cafile=str(fleet.ca_file))
    url = fleet.gateway_url.rstrip("/").replace("https://", "wss://") + "/ws/stream"
    async with websockets.connect(url, ssl=context, additional_headers={"X-API-Key":
                                  fleet.api_key}, max_size=2**24) as ws:  # fmt: skip
        client = Session(ws)
        await ws.send(json.dumps({"type": "start", "mode": "hands_free"}))
        await asyncio.wait_for(client.arrived.wait(), 30)
        await client.stream(silence(0.3) + speech)
        await client.stream_until("speech_ended", timeout=60)
        client.reader.cancel()
        return client.kinds()


async def test_a_service_moved_to_another_host_serves_there_and_leaves_the_old_one(
    fleet: Fleet, tmp_path: Path
) -> None:
    paths = st.paths("lab", ROOT)
    api = StackApi(fleet.config, ROOT, paths)
    planned = fleet.config.services.vad.pin
    assert planned == {"h3": 1, "h4": 1}, "the lab stack file's vad placement"
    assert _passing_nodes(api, VAD) == ["h3", "h4"]
    moved = _with_pin(fleet.config, "vad", {"h3": 1, "h2": 1})
    try:
        started = time.monotonic()
        report: DeployReport = await asyncio.to_thread(deploy, moved, ROOT, paths, print)
        took = time.monotonic() - started
        changed = {(h, n, c) for h, per in report.changes.items() for n, c in per.items()
                   if c != "unchanged"}  # fmt: skip
        # Replicas are numbered in host order: h3's becomes morgan-vad-2, h2's is -1; and
        # Prometheus scrapes the instances where they are now.
        assert changed == {
            ("h2", "morgan-vad-1", "created"),
            ("h4", "morgan-vad-2", "removed"),
            ("h3", "morgan-vad-1", "removed"),
            ("h3", "morgan-vad-2", "created"),
            ("h3", "morgan-prometheus", "replaced"),
        }
        assert _vad_containers(fleet, "h4") == []
        assert _vad_containers(fleet, "h2") == ["morgan-vad-1"]
        assert _vad_containers(fleet, "h3") == ["morgan-vad-2"]
        listed = await asyncio.to_thread(_wait_passing, api, VAD, ["h2", "h3"])

        # Only h2's instance left to answer: h3's stopped, a session's voice activity is
        # h2's.
        h3 = fleet.engines["h3"]
        await asyncio.to_thread(h3.run, "stop", "morgan-vad-2")
        try:
            await asyncio.to_thread(_wait_passing, api, VAD, ["h2"])
            kinds = await _voice_activity(fleet, tmp_path)
        finally:
            await asyncio.to_thread(h3.run, "start", "morgan-vad-2")
        assert {"started", "speech_started", "speech_ended"} <= set(kinds), kinds
        assert "error" not in kinds, kinds
        await asyncio.to_thread(_wait_passing, api, VAD, ["h2", "h3"])
    finally:
        back: DeployReport = await asyncio.to_thread(deploy, fleet.config, ROOT, paths, print)
        await asyncio.to_thread(_wait_passing, api, VAD, ["h3", "h4"])
    print(
        f"[scaling] vad moved h4 -> h2: deploy {took:.0f} s, passing in Consul"
        f" {listed:.1f} s after it; moved back: {back.changed} changes"
    )
    undone = {(h, n, c) for h, per in back.changes.items() for n, c in per.items()
              if c != "unchanged"}  # fmt: skip
    assert undone == {
        ("h2", "morgan-vad-1", "removed"),
        ("h4", "morgan-vad-2", "created"),
        ("h3", "morgan-vad-2", "removed"),
        ("h3", "morgan-vad-1", "created"),
        ("h3", "morgan-prometheus", "replaced"),
    }
