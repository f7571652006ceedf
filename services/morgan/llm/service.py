"""Chat completions: request checks, limits, stop strings, timeouts, OpenAI response shapes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from morgan.llm.config import LLMSettings
from morgan.llm.engine import GenerationChunk, GenerationParams, LLMEngine
from morgan.llm.schemas import ChatCompletionRequest
from morgan.models import metrics
from morgan.models.errors import ClientGone, ModelRequestError
from morgan.models.holder import ModelHolder
from morgan.models.slots import MeteredLimiter
from morgan.shared.client_gone import client_has_gone
from morgan.shared.settings import settings_source


def message_texts(request: ChatCompletionRequest) -> list[dict[str, str]]:
    """Messages as role/content strings; refuses what a text model cannot take."""
    if not request.messages:
        raise ModelRequestError(
            400, "messages is empty: send at least one message", param="messages"
        )
    out: list[dict[str, str]] = []
    for i, message in enumerate(request.messages):
        content = message.content
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        else:
            parts = []
            for part in content:
                if part.type != "text" or part.text is None:
                    raise ModelRequestError(
                        400,
                        f"messages[{i}].content has a {part.type!r} part; this model "
                        "takes text parts only",
                        param=f"messages[{i}].content",
                    )
                parts.append(part.text)
            text = "".join(parts)
        out.append(
            {"role": "system" if message.role == "developer" else message.role, "content": text}
        )
    if not any(m["content"].strip() for m in out):
        raise ModelRequestError(400, "every message is empty: send some text", param="messages")
    return out


def stop_list(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if len(items) > 4:
        raise ModelRequestError(400, "stop takes at most 4 sequences", param="stop")
    if any(not s for s in items):
        raise ModelRequestError(400, "stop sequences may not be empty", param="stop")
    return tuple(items)


class StopStringFilter:
    """Cuts the output at the first stop string, holding back text that may start one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if not self.stops:
            return text
        self.pending += text
        cut = min((i for s in self.stops if (i := self.pending.find(s)) >= 0), default=-1)
        if cut >= 0:
            out, self.pending = self.pending[:cut], ""
            self.stopped = True
            return out
        if self.hold == 0:
            out, self.pending = self.pending, ""
            return out
        out, self.pending = self.pending[: -self.hold], self.pending[-self.hold :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@dataclass
class Prepared:
    prompt_ids: list[int]
    params: GenerationParams
    model: str
    request_id: str
    created: int


class ChatService:
    """Chat completions under the limits `settings` gives now (read on every request)."""

    def __init__(
        self,
        settings: LLMSettings | Callable[[], LLMSettings],
        holder: ModelHolder[LLMEngine],
        limiter: MeteredLimiter,
    ) -> None:
        self._settings = settings_source(settings)
        self.holder = holder
        self.limiter = limiter

    @property
    def settings(self) -> LLMSettings:
        return self._settings()

    def check(
        self, request: ChatCompletionRequest
    ) -> tuple[list[dict[str, str]], GenerationParams]:
        s = self.settings
        if request.model and request.model != s.model_id:
            raise ModelRequestError(
                404,
                f"model {request.model!r} is not served here; this instance serves "
                f"{s.model_id!r} (see GET /v1/models)",
                code="model_not_found",
                param="model",
            )
        if request.n != 1:
            raise ModelRequestError(400, "n must be 1: one choice per request", param="n")
        if request.tools:
            raise ModelRequestError(
                400,
                "tools are not supported by morgan-llm; send the request without tools",
                param="tools",
            )
        messages = message_texts(request)
        chars = sum(len(m["content"]) for m in messages)
        if chars > s.max_prompt_chars:
            raise ModelRequestError(
                413,
                f"messages hold {chars} characters, over the limit of "
                f"{s.max_prompt_chars}; shorten the conversation",
                param="messages",
            )
        max_tokens = (
            request.max_completion_tokens
            or request.max_tokens
            or min(s.default_max_tokens, s.max_tokens_limit)
        )
        if max_tokens > s.max_tokens_limit:
            raise ModelRequestError(
                400,
                f"max_tokens {max_tokens} is over this server's limit of "
                f"{s.max_tokens_limit}; ask for fewer",
                param="max_tokens",
            )
        if request.min_tokens > max_tokens:
            raise ModelRequestError(
                400,
                f"min_tokens {request.min_tokens} is over max_tokens {max_tokens}; "
                "ask for at most as many tokens as the reply may have",
                param="min_tokens",
            )
        params = GenerationParams(
            max_tokens=max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=stop_list(request.stop),
            seed=request.seed,
            min_tokens=request.min_tokens,
        )
        return messages, params

    def check_context(self, prompt_ids: list[int], params: GenerationParams) -> None:
        total = len(prompt_ids) + params.max_tokens
        if total > self.settings.max_context_tokens:
            raise ModelRequestError(
                400,
                f"prompt ({len(prompt_ids)} tokens) plus max_tokens ({params.max_tokens}) "
                f"is {total}, over the context limit of {self.settings.max_context_tokens}; "
                "shorten the messages or lower max_tokens",
                param="messages",
            )

    async def generate(
        self, engine: LLMEngine, prompt_ids: list[int], params: GenerationParams
    ) -> AsyncIterator[GenerationChunk]:
        """Engine chunks with stop strings applied, metrics recorded, cancelled on exit and
        when the client closes its connection (the chunks then just end)."""
        cancel = threading.Event()
        stops = StopStringFilter(tuple(params.stop))
        started = time.perf_counter()
        tokens = 0
        model = self.settings.model_id
        metrics.LLM_TOKENS_TOTAL.labels(model, "prompt").inc(len(prompt_ids))
        stream = engine.stream(prompt_ids, params, cancel)
        try:
            async for chunk in stream:
                if client_has_gone():
                    return
                tokens = chunk.completion_tokens
                text = stops.feed(chunk.text)
                if stops.stopped:
                    yield GenerationChunk(text, tokens, "stop")
                    return
                if chunk.finish_reason is not None:
                    yield GenerationChunk(text + stops.flush(), tokens, chunk.finish_reason)
                    return
                if text:
                    yield GenerationChunk(text, tokens)
        finally:
            cancel.set()
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
            elapsed = time.perf_counter() - started
            metrics.LLM_TOKENS_TOTAL.labels(model, "completion").inc(tokens)
            if tokens and elapsed > 0:
                metrics.LLM_TOKENS_PER_SECOND.labels(model).observe(tokens / elapsed)
                metrics.LLM_LAST_TOKENS_PER_SECOND.labels(model).set(tokens / elapsed)

    def timeout_error(self) -> ModelRequestError:
        return ModelRequestError(
            504,
            f"generation took longer than request_timeout_seconds "
            f"({self.settings.request_timeout_seconds:g} s); ask for fewer tokens or raise the "
            "limit",
            code="timeout",
        )

    async def complete(self, request: ChatCompletionRequest) -> dict[str, Any]:
        messages, params = self.check(request)
        async with self.limiter.slot(), self.holder.use() as engine:
            prompt_ids = await asyncio.to_thread(engine.prompt_token_ids, messages)
            self.check_context(prompt_ids, params)
            parts: list[str] = []
            last = GenerationChunk("", 0, "stop")
            try:
                async with asyncio.timeout(self.settings.request_timeout_seconds):
                    async for chunk in self.generate(engine, prompt_ids, params):
                        parts.append(chunk.text)
                        last = chunk
            except TimeoutError as exc:
                raise self.timeout_error() from exc
            if client_has_gone():
                raise ClientGone(self.settings.service_name, started=True)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.settings.model_id,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(parts)},
                    "finish_reason": last.finish_reason or "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": len(prompt_ids),
                "completion_tokens": last.completion_tokens,
                "total_tokens": len(prompt_ids) + last.completion_tokens,
            },
        }

    async def open_stream(self, request: ChatCompletionRequest) -> AsyncIterator[str]:
        """Check the request and take a slot now (so errors are plain 4xx/503), then stream."""
        messages, params = self.check(request)
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(self.limiter.slot())
            engine = await stack.enter_async_context(self.holder.use())
            prompt_ids = await asyncio.to_thread(engine.prompt_token_ids, messages)
            self.check_context(prompt_ids, params)
        except BaseException:
            await stack.aclose()
            raise
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return self._sse(stack, engine, prompt_ids, params, include_usage)

    async def _sse(
        self,
        stack: contextlib.AsyncExitStack,
        engine: LLMEngine,
        prompt_ids: list[int],
        params: GenerationParams,
        include_usage: bool,
    ) -> AsyncIterator[str]:
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.settings.model_id,
        }

        def event(delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
            body = {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
                **extra,
            }
            return f"data: {json.dumps(body)}\n\n"

        completion_tokens = 0
        async with stack:
            yield event({"role": "assistant", "content": ""}, None)
            try:
                async with asyncio.timeout(self.settings.request_timeout_seconds):
                    async for chunk in self.generate(engine, prompt_ids, params):
                        completion_tokens = chunk.completion_tokens
                        if chunk.text:
                            yield event({"content": chunk.text}, None)
                        if chunk.finish_reason is not None:
                            yield event({}, chunk.finish_reason)
            except TimeoutError:
                error = self.timeout_error()
                yield f"data: {json.dumps(error.body())}\n\n"
            if include_usage:
                usage = {
                    "prompt_tokens": len(prompt_ids),
                    "completion_tokens": completion_tokens,
                    "total_tokens": len(prompt_ids) + completion_tokens,
                }
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
