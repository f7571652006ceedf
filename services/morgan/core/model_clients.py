"""Calls to the model services (OpenAI-compatible) by Consul name through MorganHTTPClient."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from morgan.core.config import CoreSettings
from morgan.core.exceptions import (
    ModelsBusyError,
    StageFailedError,
    StageTimeoutError,
    StageUnavailableError,
)
from morgan.shared.discovery import DiscoveryError
from morgan.shared.http_client import MorganHTTPClient, UpstreamError, busy_retry_after
from morgan.shared.settings import settings_source

_CONTROL = dict.fromkeys(c for c in range(32) if chr(c) not in "\n\t")


def clean_text(text: str) -> str:
    """Model output without control characters (PostgreSQL text cannot hold NUL at all)."""
    return text.translate(_CONTROL)


def _upstream_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err or body.get("detail") or body)[:300]
    return str(body)[:300]


def _check(stage: str, service: str, resp: httpx.Response) -> None:
    """A busy answer is 503 + Retry-After (core sheds the turn); any other error is 502."""
    wait = busy_retry_after(resp)
    if wait is not None:
        raise ModelsBusyError(
            f"{stage}: every instance of {service} is busy and stayed busy for as long as"
            f" the turn could wait ({_upstream_message(resp)}); retry after {wait:.0f} s,"
            f" or add {stage} instances / raise their max_concurrency",
            headers={"Retry-After": str(max(1, round(wait)))},
        )
    if resp.status_code >= 400:
        raise StageFailedError(
            f"{stage}: {service} answered {resp.status_code}: {_upstream_message(resp)}"
        )


class ModelClients:
    """The model services as core's settings name them now: service names, model, max
    tokens, temperature, voice and API key are read from `settings` on every call."""

    def __init__(
        self, http: MorganHTTPClient, settings: CoreSettings | Callable[[], CoreSettings]
    ) -> None:
        self.http = http
        self._settings = settings_source(settings)

    @property
    def settings(self) -> CoreSettings:
        return self._settings()

    @property
    def headers(self) -> dict[str, str]:
        api_key = self.settings.service_api_key.get_secret_value()
        return {"X-API-Key": api_key} if api_key else {}

    async def llm_capacity(self) -> int | None:
        """Requests the llm instances found can hold at once (running plus waiting, from
        their Consul meta `capacity`); None when there are none or one does not say."""
        try:
            endpoints = await self.http.discovery.discover(self.llm)
        except DiscoveryError:
            return None
        capacities = [e.meta.get("capacity", "") for e in endpoints]
        if not capacities or not all(c.isdigit() for c in capacities):
            return None
        return sum(int(c) for c in capacities)

    @property
    def llm(self) -> str:
        return self.settings.llm_service

    @property
    def stt(self) -> str:
        return self.settings.stt_service

    @property
    def tts(self) -> str:
        return self.settings.tts_service

    async def _call(
        self, stage: str, service: str, timeout_s: float, **kwargs: Any
    ) -> httpx.Response:
        try:
            async with asyncio.timeout(timeout_s):
                resp = await self.http.request(
                    service, "POST", timeout=timeout_s, headers=self.headers,
                    deadline=self.http.clock() + timeout_s, **kwargs,
                )  # fmt: skip
        except TimeoutError as exc:
            raise StageTimeoutError(
                f"{stage}: {service} did not answer within {timeout_s:.0f}s "
                f"({stage}_timeout_seconds); is it overloaded? raise the limit or add instances"
            ) from exc
        except httpx.TimeoutException as exc:
            raise StageTimeoutError(
                f"{stage}: {service} timed out ({exc}); raise {stage}_timeout_seconds"
            ) from exc
        except (UpstreamError, DiscoveryError) as exc:
            raise StageUnavailableError(f"{stage}: {exc}", headers={"Retry-After": "5"}) from exc
        return resp

    async def transcribe(
        self, audio: bytes, filename: str, content_type: str, language: str | None,
        timeout_s: float, idempotency_key: str,
    ) -> str:  # fmt: skip
        data = {"model": "default", "response_format": "json"}
        if language:
            data["language"] = language
        resp = await self._call(
            "stt", self.stt, timeout_s,
            path="/v1/audio/transcriptions",
            files={"file": (filename, audio, content_type)},
            data=data,
            idempotency_key=idempotency_key,
        )  # fmt: skip
        if resp.status_code in (400, 415, 422):
            from morgan.core.exceptions import InvalidInputError

            raise InvalidInputError(
                f"stt could not read the audio: {_upstream_message(resp)}; send a valid "
                "wav, flac, ogg or mp3 recording"
            )
        _check("stt", self.stt, resp)
        try:
            return clean_text(str(resp.json()["text"])).strip()
        except (ValueError, KeyError, TypeError) as exc:
            raise StageFailedError(f"stt: {self.stt} answered without a text field") from exc

    def _chat_body(self, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {
            "model": s.llm_model,
            "messages": messages,
            "max_tokens": s.llm_max_tokens,
            "temperature": s.llm_temperature,
            "stream": stream,
        }
        if s.llm_min_tokens:
            body["min_tokens"] = min(s.llm_min_tokens, s.llm_max_tokens)
        return body

    async def complete(
        self, messages: list[dict[str, str]], timeout_s: float, idempotency_key: str
    ) -> str:
        resp = await self._call(
            "llm", self.llm, timeout_s,
            path="/v1/chat/completions",
            json=self._chat_body(messages, stream=False),
            idempotency_key=idempotency_key,
        )  # fmt: skip
        _check("llm", self.llm, resp)
        try:
            return clean_text(str(resp.json()["choices"][0]["message"]["content"]))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise StageFailedError(f"llm: {self.llm} answered without choices[0].message") from exc

    async def stream(
        self, messages: list[dict[str, str]], timeout_s: float, idempotency_key: str
    ) -> AsyncIterator[str]:
        """Yield content deltas of a streamed chat completion (SSE)."""
        deadline = time.monotonic() + timeout_s
        try:
            async with asyncio.timeout(timeout_s), self.http.stream(
                self.llm, "POST", "/v1/chat/completions",
                json=self._chat_body(messages, stream=True),
                headers=self.headers,
                idempotency_key=idempotency_key,
                timeout=timeout_s,
                deadline=self.http.clock() + timeout_s,
            ) as resp:  # fmt: skip
                if resp.status_code >= 400:
                    await resp.aread()
                    _check("llm", self.llm, resp)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    try:
                        delta = json.loads(payload)["choices"][0].get("delta", {})
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                        continue
                    content = delta.get("content") if isinstance(delta, dict) else None
                    text = clean_text(str(content)) if content else ""
                    if text:
                        yield text
        except TimeoutError as exc:
            raise StageTimeoutError(
                f"llm: the stream did not finish within {timeout_s:.0f}s (llm_timeout_seconds)"
            ) from exc
        except httpx.TimeoutException as exc:
            left = max(0.0, deadline - time.monotonic())
            raise StageTimeoutError(f"llm: stream timed out ({exc}, {left:.0f}s left)") from exc
        except (UpstreamError, DiscoveryError) as exc:
            raise StageUnavailableError(f"llm: {exc}", headers={"Retry-After": "5"}) from exc
        except httpx.TransportError as exc:
            raise StageFailedError(f"llm: the stream broke off ({exc})") from exc

    async def speak(self, text: str, timeout_s: float, idempotency_key: str) -> bytes:
        resp = await self._call(
            "tts", self.tts, timeout_s,
            path="/v1/audio/speech",
            json={"model": "default", "input": text, "voice": self.settings.tts_voice,
                  "response_format": "wav"},
            idempotency_key=idempotency_key,
        )  # fmt: skip
        _check("tts", self.tts, resp)
        if not resp.content:
            raise StageFailedError(f"tts: {self.tts} answered with no audio")
        return resp.content
