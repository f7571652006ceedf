"""A hands-free session through the lab's gateway: core streams the audio to a morgan-vad
instance on another host (found in Consul, over TLS with client certificates), and the
utterance becomes a turn on the lab's models when the person stops. (Interruptions are
proven on core with an answer slow enough to speak over: tests/core/test_hands_free.py;
the lab's tiny models may finish first.)"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import httpx
import pytest
import websockets
from morgan.deploy.outputs import load_outputs, write_ca_file
from morgan.deploy.rollout import DeployReport, api_key_for
from morgan.lab import stack as st

from tests.core.audio_samples import espeak_wav
from tests.core.hands_free_client import Session, silence, speech_pcm

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.asyncio(loop_scope="session")]  # fmt: skip


async def test_a_hands_free_turn_on_the_fleet(lab_fleet: DeployReport, tmp_path: Path) -> None:
    outputs = load_outputs(st.paths("lab", ROOT))
    ca_file = write_ca_file(outputs, tmp_path)
    key = api_key_for(st.load_config("lab", ROOT), outputs, ca_file, owner="hands-free")
    speech = speech_pcm(espeak_wav("What is the weather like today?", tmp_path / "turn.wav"))
    gateway = outputs["gateway_url"].rstrip("/")
    context = ssl.create_default_context(cafile=str(ca_file))
    async with websockets.connect(
        gateway.replace("https://", "wss://") + "/ws/stream", ssl=context,
        additional_headers={"X-API-Key": key}, max_size=2**24,
    ) as ws:  # fmt: skip
        client = Session(ws)
        await ws.send(json.dumps({"type": "start", "mode": "hands_free"}))
        await asyncio.wait_for(client.arrived.wait(), 30)
        assert client.first("started") is not None, client.events
        await client.stream(silence(0.3) + speech)
        complete = await client.stream_until("response_complete", timeout=120)
        kinds = client.kinds()
        assert {"speech_started", "speech_ended", "transcription", "response_text"} <= set(kinds), (
            kinds
        )
        assert "response_audio" in kinds, "the answer came back without speech"
        assert "error" not in kinds, client.of("error")
        client.reader.cancel()
    async with httpx.AsyncClient(base_url=gateway, verify=str(ca_file),
                                 headers={"X-API-Key": key}, timeout=30) as api:  # fmt: skip
        stored = (await api.get(f"/api/conversations/{complete['conversation_id']}")).json()
    transcription = client.first("transcription")
    assert transcription is not None
    assert [(t["user_text"], t["interrupted"]) for t in stored["turns"]] == [
        (transcription["text"], False)
    ]
