"""A host added to the lab and removed again, as docs/operations/scaling.md says: h5
made like the others, put in the stack file with vad moved onto it from h4, `morgan
deploy`; the instance on h5 runs and serves, the one on h4 is removed and leaves
Consul's catalogue. Then h5 out of the stack file, deploy, its containers stopped and
its node made to leave: vad back on h4, nothing of h5 left in Consul."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import websockets
from morgan.deploy.backup import Fleet as StackApi
from morgan.deploy.rollout import DeployReport, deploy
from morgan.lab import hosts as lab
from morgan.lab import stack as st
from morgan.lab.polling import NotYet, poll

from infra.config import MorganStackConfig
from tests.chaos.conftest import ROOT, Fleet
from tests.core.audio_samples import espeak_wav
from tests.core.hands_free_client import Session, silence, speech_pcm

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.asyncio(loop_scope="session")]  # fmt: skip

VAD = "morgan-vad"
H5 = "10.213.87.15"  # lab.add_host's address for h5 on the lab's subnet


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


def _with_h5(config: MorganStackConfig, vad_pin: dict[str, int]) -> MorganStackConfig:
    """The lab's stack file with host h5 (made like h4) and vad placed by `vad_pin`."""
    data = config.model_dump()
    h4 = next(h for h in data["hosts"] if h["name"] == "h4")
    h5 = {**h4, "name": "h5", "docker": f"ssh://morgan@{H5}", "address": H5}
    data["hosts"] = (*data["hosts"], h5)
    data["services"]["vad"]["pin"] = vad_pin
    return MorganStackConfig.model_validate(data)


def _changes(report: DeployReport) -> set[tuple[str, str, str]]:
    return {(h, n, c) for h, per in report.changes.items() for n, c in per.items()
            if c != "unchanged"}  # fmt: skip


def _members(fleet: Fleet) -> dict[str, str]:
    server = fleet.deployment.of_role("consul-server")[0]
    out = fleet.consul_exec(server, "consul members").stdout.decode()
    return {row.split()[0]: row.split()[2] for row in out.splitlines()[1:] if row.strip()}


async def test_a_host_added_takes_a_service_and_removed_leaves_nothing_behind(
    fleet: Fleet, lab_paths: lab.LabPaths, tmp_path: Path
) -> None:
    paths = st.paths("lab", ROOT)
    api = StackApi(fleet.config, ROOT, paths)
    assert fleet.config.services.vad.pin == {"h3": 1, "h4": 1}, "the lab's vad placement"
    assert _passing_nodes(api, VAD) == ["h3", "h4"]
    took: dict[str, float] = {}
    server = fleet.deployment.of_role("consul-server")[0]
    await asyncio.to_thread(lab.add_host, lab_paths, "h5")
    try:
        # Added: h5 in the stack file, vad moved from h4 to it.
        started = time.monotonic()
        added = await asyncio.to_thread(deploy, _with_h5(fleet.config, {"h3": 1, "h5": 1}),
                                        ROOT, paths, print)  # fmt: skip
        took["add h5, vad h4 -> h5"] = time.monotonic() - started
        # Its agent, its node-exporter and the moved replica; pg_hba and Prometheus's
        # targets list every host, so both PostgreSQL members and Prometheus change too.
        assert _changes(added) == {
            ("h5", "consul-agent-h5", "created"), ("h5", "morgan-node-exporter-h5", "created"),
            ("h5", "morgan-vad-2", "created"), ("h4", "morgan-vad-2", "removed"),
            ("h1", "morgan-postgres-primary", "replaced"),
            ("h3", "morgan-postgres-standby", "replaced"),
            ("h3", "morgan-prometheus", "replaced")}  # fmt: skip
        assert _vad_containers(fleet, "h4") == []
        assert _members(fleet)["h5"] == "alive"
        await asyncio.to_thread(_wait_passing, api, VAD, ["h3", "h5"])

        # Only h5's instance left to answer: h3's stopped, a session's voice activity is
        # h5's.
        h3 = fleet.engines["h3"]
        await asyncio.to_thread(h3.run, "stop", "morgan-vad-1")
        try:
            await asyncio.to_thread(_wait_passing, api, VAD, ["h5"])
            kinds = await _voice_activity(fleet, tmp_path)
        finally:
            await asyncio.to_thread(h3.run, "start", "morgan-vad-1")
        assert {"started", "speech_started", "speech_ended"} <= set(kinds), kinds
        assert "error" not in kinds, kinds

        # Removed as docs/operations/scaling.md says: out of the stack file, deploy (vad
        # back on h4, h5's agent token deleted); then Morgan's containers on h5 stopped
        # and its node made to leave.
        started = time.monotonic()
        removed = await asyncio.to_thread(deploy, fleet.config, ROOT, paths, print)
        took["remove h5"] = time.monotonic() - started
        assert ("h4", "morgan-vad-2", "created") in _changes(removed)
        assert "h5" not in removed.changes
        on_h5 = lab.docker_args(lab_paths, next(h for h in lab.load(lab_paths) if h.name == "h5"))
        left = subprocess.run(
            [*on_h5, "ps", "-aq", "--filter", "label=morgan.stack=lab"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert len(left) == 3, "h5's agent, node-exporter and vad: no deploy reaches h5 now"
        subprocess.run([*on_h5, "stop", *left], capture_output=True, check=True)
        subprocess.run([*on_h5, "rm", *left], capture_output=True, check=True)
        fleet.consul_exec(server, "consul force-leave -prune h5")
    finally:
        await asyncio.to_thread(lab.remove_host, lab_paths, "h5")
        await asyncio.to_thread(fleet.lead_postgres_as_planned)
    await asyncio.to_thread(_wait_passing, api, VAD, ["h3", "h4"])
    assert "h5" not in _members(fleet)
    policies = fleet.consul_exec(server, "consul acl policy list -format=json").stdout
    assert "morgan-agent-h5" not in {p["Name"] for p in json.loads(policies)}
    print("[scaling] " + ", ".join(f"{k}: deploy {v:.0f} s" for k, v in took.items()))
