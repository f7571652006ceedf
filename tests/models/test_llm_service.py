"""morgan-llm in process with the tiny model, on each CPU engine: the same contract.

`transformers` runs the tiny Llama in Hugging Face format; `llama.cpp` runs the same model
converted to GGUF by llama.cpp's own converter."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from morgan.llm.app import build_app
from morgan.llm.config import LLMSettings
from morgan.llm.llamacpp_engine import LlamaCppEngine
from morgan.llm.transformers_engine import TransformersEngine
from morgan.models.directory import ModelDirectoryError
from morgan.models.testing import cached_tiny_model
from prometheus_client import REGISTRY

from tests.models.conftest import local_settings, running
from tests.shared.helpers import UvicornThread, aeventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]
in_session_loop = pytest.mark.asyncio(loop_scope="session")

HELLO = [{"role": "user", "content": "Hello, who are you?"}]


ENGINES = ("transformers", "llama.cpp")


@pytest.fixture(scope="module", params=ENGINES)
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<dir>/llm/tiny` in the format of the engine under test."""
    root = tmp_path_factory.mktemp(f"models-{request.param}")
    kind = "llm" if request.param == "transformers" else "llm-gguf"
    shutil.copytree(cached_tiny_model(kind), root / "llm" / "tiny",
                    ignore=shutil.ignore_patterns(".complete"))  # fmt: skip
    return root


def engine_of(model_dir: Path) -> str:
    return "llama.cpp" if (model_dir / "llm" / "tiny" / "tiny.gguf").exists() else "transformers"


def settings(model_dir: Path, **overrides: Any) -> LLMSettings:
    values: dict[str, Any] = {"model_dir": model_dir, "model": "tiny", **local_settings(),
                              "engine": engine_of(model_dir)}  # fmt: skip
    values.update(overrides)
    return LLMSettings(**values)


def sse_events(body: str) -> list[Any]:
    events = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


@in_session_loop
async def test_completion_models_and_metrics(model_dir: Path) -> None:
    async with running(build_app(settings(model_dir))) as client:
        models = (await client.get("/v1/models")).json()
        assert models["object"] == "list"
        assert [m["id"] for m in models["data"]] == ["tiny"]

        reply = await client.post(
            "/v1/chat/completions",
            json={"model": "tiny", "messages": HELLO, "max_tokens": 6, "temperature": 0},
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["object"] == "chat.completion" and body["model"] == "tiny"
        choice = body["choices"][0]
        assert choice["message"]["role"] == "assistant"
        assert isinstance(choice["message"]["content"], str)
        assert choice["finish_reason"] == "length"  # the tiny model never ends on its own
        usage = body["usage"]
        assert usage["completion_tokens"] == 6
        assert usage["prompt_tokens"] > 5
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

        again = await client.post(
            "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 6, "temperature": 0}
        )
        assert again.json()["choices"][0]["message"] == choice["message"], "greedy is repeatable"

        metrics = (await client.get("/metrics")).text
        assert 'morgan_model_load_seconds{model="tiny",service="morgan-llm"}' in metrics
        assert 'morgan_llm_tokens_total{kind="completion",model="tiny"}' in metrics
        assert "morgan_llm_tokens_per_second_count" in metrics
        assert 'morgan_model_queue_depth{service="morgan-llm"} 0.0' in metrics


@in_session_loop
async def test_streaming_is_openai_sse_ending_in_done(model_dir: Path) -> None:
    async with running(build_app(settings(model_dir))) as client:
        reply = await client.post(
            "/v1/chat/completions",
            json={
                "messages": HELLO,
                "max_tokens": 5,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = sse_events(reply.text)
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert len({c["id"] for c in chunks}) == 1
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5

        streamed = "".join(
            c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]
        )
        whole = await client.post(
            "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 5, "temperature": 0}
        )
        assert streamed == whole.json()["choices"][0]["message"]["content"]


@in_session_loop
async def test_stop_string_cuts_the_reply(model_dir: Path) -> None:
    async with running(build_app(settings(model_dir))) as client:
        body = {"messages": HELLO, "max_tokens": 24, "temperature": 0}
        whole = (await client.post("/v1/chat/completions", json=body)).json()
        text = whole["choices"][0]["message"]["content"]
        assert len(text) > 12, text
        stop = text[6:9]
        before = text[: text.index(stop)]
        for stream in (False, True):
            reply = await client.post("/v1/chat/completions",
                                      json={**body, "stop": [stop], "stream": stream})  # fmt: skip
            assert reply.status_code == 200, reply.text
            if stream:
                chunks = [e for e in sse_events(reply.text)[:-1] if e["choices"]]
                got = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
                finish = chunks[-1]["choices"][0]["finish_reason"]
            else:
                got = reply.json()["choices"][0]["message"]["content"]
                finish = reply.json()["choices"][0]["finish_reason"]
            assert (got, finish) == (before, "stop")


@in_session_loop
async def test_same_seed_same_sampled_reply(model_dir: Path) -> None:
    async with running(build_app(settings(model_dir))) as client:
        body = {"messages": HELLO, "max_tokens": 12, "temperature": 1.0, "top_p": 0.9}

        async def reply(seed: int) -> str:
            answer = await client.post("/v1/chat/completions", json={**body, "seed": seed})
            assert answer.status_code == 200, answer.text
            return str(answer.json()["choices"][0]["message"]["content"])

        assert await reply(7) == await reply(7)
        assert await reply(7) != await reply(8)


@in_session_loop
async def test_min_tokens_holds_back_the_end_of_a_sampled_reply(model_dir: Path) -> None:
    async with running(build_app(settings(model_dir))) as client:
        body = {"messages": HELLO, "max_tokens": 6, "min_tokens": 6, "temperature": 2.0}
        for seed in range(8):
            answer = await client.post("/v1/chat/completions", json={**body, "seed": seed})
            assert answer.status_code == 200, answer.text
            reply = answer.json()
            assert reply["usage"]["completion_tokens"] == 6, (seed, reply)
            assert reply["choices"][0]["finish_reason"] == "length", (seed, reply)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"messages": []}, 400, "messages is empty"),
        ({"messages": [{"role": "user", "content": "  "}]}, 400, "every message is empty"),
        ({"messages": HELLO, "max_tokens": 100000}, 400, "over this server's limit of 64"),
        ({"messages": HELLO, "model": "gpt-4"}, 404, "not served here"),
        ({"messages": HELLO, "n": 2}, 400, "n must be 1"),
        ({"messages": [{"role": "user", "content": "x" * 5000}]}, 413, "over the limit"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            400,
            "text parts only",
        ),
        ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4"),
        ({"messages": HELLO, "temperature": 9}, 422, "temperature"),
        ({"messages": HELLO, "max_tokens": 4, "min_tokens": 5}, 400, "min_tokens 5 is over"),
        ({"messages": HELLO, "min_tokens": -1}, 422, "min_tokens"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "role"),
        ({"messages": HELLO, "tools": [{"type": "function"}]}, 400, "tools are not supported"),
    ],
)
@in_session_loop
async def test_bad_requests_get_4xx_naming_the_problem(
    model_dir: Path, body: dict[str, Any], status: int, needle: str
) -> None:
    app = build_app(settings(model_dir, max_tokens_limit=64, max_prompt_chars=4000))
    async with running(app) as client:
        for stream in (False, True):
            reply = await client.post("/v1/chat/completions", json={**body, "stream": stream})
            assert reply.status_code == status, reply.text
            assert needle in reply.json()["error"]


@in_session_loop
async def test_prompt_plus_max_tokens_over_context_is_400(model_dir: Path) -> None:
    app = build_app(settings(model_dir, max_context_tokens=40, max_tokens_limit=64))
    async with running(app) as client:
        reply = await client.post(
            "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 30}
        )
        assert reply.status_code == 400
        assert "over the context limit of 40" in reply.json()["error"]


@in_session_loop
async def test_invalid_json_is_422(model_dir: Path) -> None:
    async with running(build_app(settings(model_dir))) as client:
        reply = await client.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert reply.status_code == 422
        assert "error" in reply.json()


@in_session_loop
async def test_full_queue_answers_503_with_retry_after(model_dir: Path) -> None:
    app = build_app(settings(model_dir, max_concurrency=1, max_queue=0, max_tokens_limit=4096))
    async with running(app) as client:
        service = app.state.chat_service
        long_run = asyncio.create_task(
            client.post(
                "/v1/chat/completions",
                json={"messages": HELLO, "max_tokens": 400, "temperature": 0},
            )
        )
        for _ in range(400):
            if service.limiter.running == 1:
                break
            await asyncio.sleep(0.01)
        assert service.limiter.running == 1
        refused = await client.post(
            "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2}
        )
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "busy" in refused.json()["error"]
        assert (await long_run).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'morgan_model_requests_rejected_total{service="morgan-llm"}' in metrics


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _served(app: Any) -> UvicornThread:
    """The app on a real uvicorn server (a client's disconnect is a closed socket), ready."""
    server = UvicornThread(app).start()

    async def ready() -> bool:
        async with httpx.AsyncClient(base_url=server.url) as client:
            return (await client.get("/ready")).status_code == 200

    await aeventually(ready, timeout=60, what="morgan-llm ready")
    return server


LONG = {"messages": HELLO, "max_tokens": 12000, "temperature": 0}  # seconds of generation
# Some seconds on each engine (the tiny model makes ~170 tokens/s on transformers here,
# ~1200 on llama.cpp): long enough to hold the one slot while another request queues.
SLOT_HOLDING_TOKENS = {"transformers": 1500, "llama.cpp": 12000}


@in_session_loop
async def test_a_queued_request_whose_client_left_never_runs(model_dir: Path) -> None:
    app = build_app(settings(model_dir, max_concurrency=1, max_queue=2, max_tokens_limit=12000,
                             max_context_tokens=16384))  # fmt: skip
    limiter = app.state.chat_service.limiter
    server = await _served(app)
    try:
        abandoned = _sample("morgan_model_requests_abandoned_total", service="morgan-llm")
        prompt = _sample("morgan_llm_tokens_total", model="tiny", kind="prompt")
        tokens = SLOT_HOLDING_TOKENS[engine_of(model_dir)]
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as patient:
            long_run = asyncio.create_task(
                patient.post("/v1/chat/completions", json={**LONG, "max_tokens": tokens})
            )
            await aeventually(lambda: _true(limiter.running == 1), what="the long run started")
            async with httpx.AsyncClient(base_url=server.url, timeout=0.5) as impatient:
                with pytest.raises(httpx.ReadTimeout):
                    await impatient.post("/v1/chat/completions",
                                         json={"messages": HELLO, "max_tokens": 4})  # fmt: skip
            await aeventually(lambda: _true(limiter.waiting == 0), timeout=5,
                              what="the abandoned request left the queue")  # fmt: skip
            assert limiter.running == 1, "it left while the long run still held the slot"
            done = await long_run
        assert done.status_code == 200, done.text
        assert done.json()["usage"]["completion_tokens"] == tokens
        assert _sample("morgan_model_requests_abandoned_total", service="morgan-llm") == (
            abandoned + 1
        )
        # Only the long run's prompt was ever tokenised: the abandoned one never ran.
        ran = _sample("morgan_llm_tokens_total", model="tiny", kind="prompt") - prompt
        assert ran == done.json()["usage"]["prompt_tokens"]
    finally:
        server.stop()


@in_session_loop
async def test_a_generation_stops_when_its_client_leaves(model_dir: Path) -> None:
    app = build_app(settings(model_dir, max_tokens_limit=12000, max_context_tokens=16384))
    limiter = app.state.chat_service.limiter
    server = await _served(app)
    try:
        completion = _sample("morgan_llm_tokens_total", model="tiny", kind="completion")
        async with httpx.AsyncClient(base_url=server.url, timeout=0.3) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.post("/v1/chat/completions", json=LONG)
        await aeventually(lambda: _true(limiter.running == 0), timeout=30,
                          what="the generation ended")  # fmt: skip
        made = _sample("morgan_llm_tokens_total", model="tiny", kind="completion") - completion
        assert 0 < made < 12000, f"{made:.0f} tokens made for a client that left after 0.3 s"
    finally:
        server.stop()


async def _true(value: bool) -> bool:
    return value


@in_session_loop
async def test_request_timeout_stops_generation(model_dir: Path) -> None:
    # 12000 tokens take the tiny model seconds even on llama.cpp (~6000 tokens/s here).
    app = build_app(
        settings(
            model_dir, request_timeout_seconds=0.3, max_tokens_limit=12000, max_context_tokens=16384
        )
    )
    async with running(app) as client:
        # Greedy: the tiny GGUF may sample its end token, it never picks it greedily.
        reply = await client.post(
            "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 12000, "temperature": 0}
        )
        assert reply.status_code == 504
        assert "request_timeout_seconds" in reply.json()["error"]

        streamed = await client.post(
            "/v1/chat/completions",
            json={"messages": HELLO, "max_tokens": 12000, "temperature": 0, "stream": True},
        )
        events = sse_events(streamed.text)
        assert events[-1] == "[DONE]"
        assert "request_timeout_seconds" in events[-2]["error"]
        assert app.state.chat_service.limiter.running == 0


@in_session_loop
async def test_idle_model_is_unloaded_and_reloaded(model_dir: Path) -> None:
    app = build_app(settings(model_dir, idle_unload_seconds=0.3))
    async with running(app) as client:
        holder = app.state.model_holder
        for _ in range(100):
            if not holder.loaded:
                break
            await asyncio.sleep(0.05)
        assert not holder.loaded
        assert (await client.get("/ready")).status_code == 200
        assert (
            'morgan_model_loaded{model="tiny",service="morgan-llm"} 0.0'
            in (await client.get("/metrics")).text
        )
        reply = await client.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2})
        assert reply.status_code == 200
        assert holder.loads == 2


class GatedTransformers(TransformersEngine):
    """The real engine whose load waits until the test opens the gate."""

    gate: threading.Event

    def load(self) -> TransformersEngine:
        assert self.gate.wait(30)
        return super().load()


class GatedLlamaCpp(LlamaCppEngine):
    gate: threading.Event

    def load(self) -> LlamaCppEngine:
        assert self.gate.wait(30)
        return super().load()


@in_session_loop
async def test_ready_only_once_the_model_is_loaded(model_dir: Path) -> None:
    gate = threading.Event()
    gated = GatedTransformers if engine_of(model_dir) == "transformers" else GatedLlamaCpp
    engine = gated(model_dir / "llm" / "tiny")
    engine.gate = gate
    app = build_app(settings(model_dir), engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/ready")).status_code == 503
            waiting = asyncio.create_task(
                client.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2})
            )
            await asyncio.sleep(0.2)
            assert not waiting.done(), "a request waits for the load instead of failing"
            gate.set()
            assert (await waiting).status_code == 200
            assert (await client.get("/ready")).status_code == 200


@in_session_loop
async def test_unloadable_model_is_never_ready_and_requests_get_503(
    model_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "llm" / "broken"
    shutil.copytree(model_dir / "llm" / "tiny", broken)
    weights = "tiny.gguf" if engine_of(model_dir) == "llama.cpp" else "model.safetensors"
    (broken / weights).write_bytes(b"this is not a model file")
    app = build_app(settings(tmp_path, model="broken", engine=engine_of(model_dir)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            for _ in range(100):
                if app.state.model_holder.last_error:
                    break
                await asyncio.sleep(0.05)
            assert (await client.get("/ready")).status_code == 503
            reply = await client.post("/v1/chat/completions", json={"messages": HELLO})
            assert reply.status_code == 503
            assert "model is not loaded" in reply.json()["error"]


def test_missing_model_fails_at_start_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelDirectoryError, match="morgan models import"):
        build_app(settings(tmp_path, model="absent"))
