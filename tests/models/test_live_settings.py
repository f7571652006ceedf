"""The model services follow a settings change while they run: limits are read from the
current settings on every request, and the limiter and idle TTL are resized on a change
from Consul KV."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from morgan.llm.app import build_app
from morgan.llm.config import LLMSettings
from morgan.llm.engine import GenerationChunk, GenerationParams, LLMEngine
from morgan.llm.schemas import ChatCompletionRequest
from morgan.llm.service import ChatService
from morgan.models.errors import ModelRequestError
from morgan.models.holder import ModelHolder
from morgan.models.slots import MeteredLimiter
from morgan.shared.config_loader import ConsulConfigLoader, env_prefix
from morgan.shared.consul_client import ConsulClientFactory
from morgan.tts.config import TTSSettings
from morgan.tts.engine import CoquiEngine, VoiceInfo
from morgan.tts.service import SpeechService

from tests.harness.servers import ConsulServer
from tests.models.conftest import running
from tests.shared.helpers import unique_name

in_session_loop = pytest.mark.asyncio(loop_scope="session")


class FakeEngine:
    """An LLM engine without a model: three prompt tokens, then "ok"."""

    engine_name = "fake"
    model_path = Path("/nonexistent/fake")
    device = "cpu"

    def load(self) -> FakeEngine:
        return self

    def unload(self) -> None:
        pass

    def prompt_token_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return [1, 2, 3]

    async def stream(
        self, prompt_ids: list[int], params: GenerationParams, cancel: threading.Event
    ) -> AsyncIterator[GenerationChunk]:
        yield GenerationChunk("ok", 1, "stop")


def chat(max_tokens: int) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    )


@pytest.mark.unit
def test_chat_checks_use_the_settings_of_the_moment() -> None:
    now = {"s": LLMSettings(model="tiny", max_tokens_limit=100)}
    holder: ModelHolder[LLMEngine] = ModelHolder(FakeEngine, service="morgan-test", model="m")
    service = ChatService(lambda: now["s"], holder, MeteredLimiter(1, 1, service="t-chat"))
    assert service.check(chat(80))[1].max_tokens == 80
    now["s"] = LLMSettings(model="tiny", max_tokens_limit=50)
    with pytest.raises(ModelRequestError, match="limit of 50"):
        service.check(chat(80))


@pytest.mark.unit
def test_voice_aliases_follow_the_settings_of_the_moment() -> None:
    voices = {v: VoiceInfo(v, Path(v), 16000, "en") for v in ("lessac", "amy")}
    engine = cast(CoquiEngine, type("Voices", (), {"info": voices})())
    now = {"s": TTSSettings(voice_aliases={"alloy": "lessac"})}
    holder: ModelHolder[CoquiEngine] = ModelHolder(lambda: engine, service="t", model="m")
    service = SpeechService(lambda: now["s"], engine, holder,
                            MeteredLimiter(1, 1, service="t-tts"))  # fmt: skip
    assert service.resolve_voice("alloy").id == "lessac"
    now["s"] = TTSSettings(voice_aliases={"alloy": "amy"})
    assert service.resolve_voice("alloy").id == "amy"


@pytest.mark.integration
@in_session_loop
async def test_llm_service_follows_a_kv_change_without_restart(consul_server: ConsulServer) -> None:
    consul = ConsulClientFactory.from_env(consul_server.addr)
    scope = unique_name("llm-live")  # a private KV scope: morgan/config/<scope>/
    kv = consul.client().kv

    def put(name: str, value: Any) -> None:
        kv.put(f"morgan/config/{scope}/{name}", json.dumps(value))

    for name, value in {
        # Registered under its own name (no other test discovers it): its meta follows.
        "service_name": scope,
        "model": "fake",
        "consul_http_addr": consul.addr,
        "host": "127.0.0.1",
    }.items():
        put(name, value)  # fmt: skip
    # A security setting: only the environment may switch API keys off.
    environ = {f"{env_prefix(scope)}AUTH_ENABLED": "false"}
    loader = ConsulConfigLoader(LLMSettings, scope, consul, environ=environ, watch_wait_seconds=5)
    app = build_app(loader.load(), loader, engine=cast(LLMEngine, FakeEngine()))
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 80}
    try:
        async with running(app) as client:
            first = await client.post("/v1/chat/completions", json=body)
            assert first.status_code == 200, first.text
            await asyncio.sleep(0.3)  # let the blocking KV query start
            put("max_tokens_limit", 50)
            put("max_concurrency", 3)
            put("max_queue", 2)
            deadline = time.monotonic() + 10
            tries = 0
            while True:
                tries += 1
                reply = await client.post("/v1/chat/completions", json=body)
                limiter = app.state.chat_service.limiter
                sizes = (limiter.max_concurrency, limiter.max_queue)
                if reply.status_code == 400 and sizes == (3, 2):
                    break
                print(f"try {tries}: status {reply.status_code}, limiter {sizes}")
                assert time.monotonic() < deadline, (
                    f"after {tries} tries the llm still answers {reply.status_code} "
                    f"({reply.text[:200]}) with limiter {sizes}; the KV change was not followed"
                )
                await asyncio.sleep(0.2)
            assert "limit of 50" in reply.json()["error"]
            # The capacity core sizes its admission from follows in Consul: 3 + 2.
            for _ in range(50):
                services = consul.client().agent.services() or {}
                meta = next((v["Meta"] for v in services.values() if v["Service"] == scope), {})
                if meta.get("capacity") == "5":
                    break
                print(f"capacity in Consul: {meta.get('capacity')}")
                await asyncio.sleep(0.2)
            assert meta.get("capacity") == "5", meta
    finally:
        kv.delete(f"morgan/config/{scope}/", recurse=True)
