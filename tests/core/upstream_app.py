"""A small, deterministic OpenAI-compatible model service for core's tests.

It is a real HTTP server built with the shared app factory, so it registers in the
real Consul exactly like morgan-llm/-stt/-tts do. Its answers are predictable
(the LLM echoes, STT reports the audio's length, TTS returns silence) and it can
be slowed down on purpose, which the overload test needs to get overlapping turns.

    python -m tests.core.upstream_app --name morgan-llm --port 18001 --consul 127.0.0.1:8500
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import wave
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from morgan.shared.app import create_app
from morgan.shared.server import run
from morgan.shared.settings import ServiceSettings

router = APIRouter()


def _delay(request: Request) -> float:
    return float(request.app.state.delay_s)


def _reply_for(messages: list[dict[str, Any]]) -> str:
    last = str(messages[-1].get("content", "")) if messages else ""
    turns = sum(1 for m in messages if m.get("role") == "user")
    system = str(messages[0].get("content", "")) if messages else ""
    remembered = system.count("\n- ")
    return f"You said: {last}. This is turn {turns}. I remember {remembered} things."


@router.post("/v1/chat/completions", response_model=None)
async def chat(request: Request) -> Any:
    body = await request.json()
    request.app.state.calls += 1
    request.app.state.last_messages = body.get("messages", [])
    request.app.state.last_params = {k: v for k, v in body.items() if k != "messages"}
    await asyncio.sleep(_delay(request))
    reply = _reply_for(body.get("messages", []))
    if not body.get("stream"):
        return {
            "id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply}}],
        }  # fmt: skip

    state = request.app.state

    async def events() -> AsyncIterator[bytes]:
        try:
            for word in reply.split(" "):
                chunk = {"choices": [{"index": 0, "delta": {"content": word + " "}}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(state.word_delay_s)
            yield b"data: [DONE]\n\n"
        except BaseException:  # the client closed the stream: generation stopped early
            state.streams_cut += 1
            raise

    return StreamingResponse(events(), media_type="text/event-stream")


@router.get("/test/last")
async def last(request: Request) -> dict[str, Any]:
    """The last chat request: its messages, and its other fields (model, max_tokens,
    temperature, stream) as `params`."""
    state = request.app.state
    return {"calls": state.calls, "messages": state.last_messages, "params": state.last_params,
            "streams_cut": state.streams_cut}  # fmt: skip


@router.post("/v1/audio/transcriptions")
async def transcribe(
    request: Request, file: UploadFile = File(...), language: str | None = Form(None)
) -> JSONResponse:
    data = await file.read()
    await asyncio.sleep(_delay(request))
    try:
        with wave.open(io.BytesIO(data)) as w:
            seconds = w.getnframes() / w.getframerate()
    except (wave.Error, EOFError):
        return JSONResponse({"error": {"message": "not a wav file"}}, status_code=400)
    return JSONResponse({"text": f"audio of {seconds:.1f} seconds"})


@router.post("/v1/audio/speech")
async def speech(request: Request) -> Response:
    body = await request.json()
    await asyncio.sleep(_delay(request))
    if request.app.state.fail_tts:
        return JSONResponse({"error": {"message": "voice model not loaded"}}, status_code=500)
    text = str(body.get("input", ""))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * request.app.state.speech_samples_per_char * max(1, len(text)))
    return Response(buf.getvalue(), media_type="audio/wav")


def build(
    name: str, port: int, consul: str, delay_s: float, fail_tts: bool, word_delay_s: float = 0.0,
    speech_ms_per_char: int = 10,
) -> FastAPI:  # fmt: skip
    settings = ServiceSettings(
        service_name=name, host="127.0.0.1", bind_host="127.0.0.1", port=port,
        consul_http_addr=consul, auth_enabled=False, shutdown_drain_seconds=1,
        # Stopped only at the end of a module: no gateway to let go first.
        shutdown_delay_seconds=0,
    )  # fmt: skip
    app = create_app(settings, routers=[router], meta={"engine": "test-echo"})
    app.state.delay_s = delay_s
    app.state.word_delay_s = word_delay_s
    app.state.speech_samples_per_char = 16 * speech_ms_per_char
    app.state.streams_cut = 0
    app.state.fail_tts = fail_tts
    app.state.calls = 0
    app.state.last_messages = []
    app.state.last_params = {}
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--consul", default=os.environ.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500"))
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fail-tts", action="store_true")
    parser.add_argument("--word-delay", type=float, default=0.0, help="streamed: per word")
    parser.add_argument("--speech-ms-per-char", type=int, default=10, help="tts: audio length")
    args = parser.parse_args()
    run(build(args.name, args.port, args.consul, args.delay, args.fail_tts, args.word_delay,
              args.speech_ms_per_char))  # fmt: skip


if __name__ == "__main__":
    main()
