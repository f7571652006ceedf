"""End to end with the real model services: morgan-llm, morgan-stt and morgan-tts run as
processes with tiny offline models, register in the real Consul, and core finds them
there by name. The models have random weights, so the tests check the pipeline (every
stage ran, the turn was stored, the audio is real audio), not what was said."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
import uuid
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import websockets
from morgan.models.testing import install_tiny_model

from tests.core.audio_samples import espeak_wav
from tests.core.conftest import ApiKeys, make_database
from tests.core.servers import CoreServer, ModelInstance, core_settings
from tests.harness.ports import free_port
from tests.harness.servers import ConsulServer, PostgresServer, RedisCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.asyncio(loop_scope="session")]  # fmt: skip


def model_instance(kind: str, consul: ConsulServer, logs: Path, model_dir: Path) -> ModelInstance:
    install_tiny_model(kind, model_dir, name="default")  # type: ignore[arg-type]
    port = free_port()
    prefix = f"MORGAN_{kind.upper()}_"
    env = {
        "MORGAN_ADVERTISE_HOST": "127.0.0.1",
        "MORGAN_MODEL_DIR": str(model_dir),
        f"{prefix}BIND_HOST": "127.0.0.1",
        f"{prefix}PORT": str(port),
        f"{prefix}CONSUL_CHECK_INTERVAL": "1s",
        f"{prefix}SHUTDOWN_DRAIN_SECONDS": "1",
        f"{prefix}SHUTDOWN_DELAY_SECONDS": "0",
    }
    if kind == "llm":  # the tiny model here is in Hugging Face format
        env[f"{prefix}ENGINE"] = "transformers"
        # One generation at a time and two waiting: the overload test fills it quickly.
        env[f"{prefix}MAX_CONCURRENCY"] = "1"
        env[f"{prefix}MAX_QUEUE"] = "2"
    argv = [sys.executable, "-m", f"morgan.{kind}"]
    return ModelInstance(f"morgan-{kind}", argv, port, consul.addr,
                         logs / f"{kind}-{port}.log", env)  # fmt: skip


@pytest.fixture(scope="module")
def real_models(
    consul_server: ConsulServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ModelInstance]]:
    logs = tmp_path_factory.mktemp("model-services")
    models = tmp_path_factory.mktemp("models")
    instances = {
        "llm": model_instance("llm", consul_server, logs, models),
        "llm2": model_instance("llm", consul_server, logs, models),
        "stt": model_instance("stt", consul_server, logs, models),
        "tts": model_instance("tts", consul_server, logs, models),
    }
    for inst in instances.values():
        inst.process.start()  # start all, then wait: they load in parallel
    try:
        for inst in instances.values():
            inst.start(timeout=180)
        yield instances
    finally:
        for inst in instances.values():
            inst.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def core(
    consul_server: ConsulServer, postgres_server: PostgresServer, redis_cluster: RedisCluster,
    real_models: dict[str, ModelInstance], api_keys: ApiKeys,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[CoreServer]:  # fmt: skip
    settings = core_settings(
        consul_server.addr, make_database(postgres_server), tmp_path_factory.mktemp("q-e2e"),
        redis_cluster_nodes=[f"{h}:{p}" for h, p in redis_cluster.startup_nodes],
        service_api_key=api_keys.service, llm_max_tokens=24, llm_timeout_seconds=60,
    )  # fmt: skip
    server = await CoreServer(settings).start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def client(core: CoreServer, api_keys: ApiKeys) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=core.url, headers=api_keys.headers, timeout=90) as c:
        yield c


def _wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        return w.getnframes() / w.getframerate()


async def test_text_turn_end_to_end(client: httpx.AsyncClient) -> None:
    user = f"e2e-{uuid.uuid4().hex[:6]}"
    resp = await client.post(
        "/api/text",
        json={"text": "Hello Morgan, how are you?", "user_id": user, "want_audio": True},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert isinstance(body["text"], str)
    assert body["timings"]["llm_ms"] > 0
    if body["text"].strip():
        assert body["warning"] is None, body["warning"]
        assert _wav_seconds(base64.b64decode(body["audio_base64"])) > 0
        assert body["timings"]["tts_ms"] > 0
    conv = (await client.get(f"/api/conversations/{body['conversation_id']}")).json()
    assert conv["turns"][0]["user_text"] == "Hello Morgan, how are you?"
    assert conv["turns"][0]["assistant_text"] == body["text"]


async def test_audio_turn_end_to_end_with_espeak_speech(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    wav = espeak_wav("Please turn on the kitchen lights.", tmp_path / "speech.wav")
    resp = await client.post(
        "/api/audio", files={"file": ("speech.wav", wav, "audio/wav")},
        data={"user_id": "e2e-audio", "language": "en"},
    )  # fmt: skip
    body = resp.json()
    if resp.status_code == 422:
        # A random-weight Whisper may hear nothing; core must then say so clearly.
        assert "no speech was recognised" in body["error"]
        return
    assert resp.status_code == 200, body
    assert isinstance(body["transcription"], str) and body["transcription"]
    assert body["timings"]["stt_ms"] > 0 and body["timings"]["llm_ms"] > 0
    conv = (await client.get(f"/api/conversations/{body['conversation_id']}")).json()
    assert conv["turns"][0]["user_text"] == body["transcription"]
    assert conv["turns"][0]["source"] == "audio"


async def test_websocket_streams_real_llm_tokens(core: CoreServer, api_keys: ApiKeys) -> None:
    async with websockets.connect(
        core.ws_url, additional_headers={"X-API-Key": api_keys.good}
    ) as ws:
        await ws.send(json.dumps({"type": "start", "user_id": "e2e-ws"}))
        await ws.send(json.dumps({"type": "text", "text": "Tell me a story."}))
        deltas = []
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert event["type"] != "error", event
            if event["type"] == "response_text":
                deltas.append(event["delta"])
            if event["type"] == "response_complete":
                break
    assert "".join(deltas) == event["text"]
    assert event["timings"]["llm_ms"] > 0


async def test_sixty_turns_at_once_get_200_or_503_with_retry_after_never_502(
    core: CoreServer, api_keys: ApiKeys
) -> None:
    """Over what the llm instances can take, turns are shed at the edge with 503 +
    Retry-After: core sized its admission from their published capacity (1 running + 2
    waiting each), and a busy llm is waited out or reported as busy, never as a 502."""
    discovery = core.orchestrator.models.http.discovery
    published = sorted(e.meta.get("capacity") for e in await discovery.discover("morgan-llm"))
    assert published == ["3", "3"]
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=core.url, headers=api_keys.headers, timeout=120,
                                 limits=limits) as burst:  # fmt: skip
        responses = await asyncio.gather(*(
            burst.post("/api/text", json={"text": f"burst {i}", "user_id": "e2e-burst"})
            for i in range(60)
        ))  # fmt: skip
    statuses = [r.status_code for r in responses]
    print({code: statuses.count(code) for code in set(statuses)})
    assert set(statuses) <= {200, 503}, sorted(statuses)
    assert statuses.count(200) >= 6, statuses
    for r in responses:
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) >= 1
            assert "llm instances found can hold at once (6)" in r.json()["error"], r.text
    assert core.orchestrator.limiter.inflight == 0


async def test_turn_succeeds_after_one_of_two_llm_instances_is_killed(
    client: httpx.AsyncClient, real_models: dict[str, ModelInstance]
) -> None:
    real_models["llm"].kill()  # SIGKILL: Consul still lists it as passing for a moment
    for i in range(4):
        resp = await client.post("/api/text", json={"text": f"still there? {i}",
                                                    "user_id": "e2e-ha"})  # fmt: skip
        assert resp.status_code == 200, resp.text
