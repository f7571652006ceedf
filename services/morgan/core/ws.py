"""WS /ws/stream: a spoken or typed turn, streamed back token by token and sentence by sentence.

In:  {type: start, user_id?, conversation_id?, want_audio?, language?, mode?}
     {type: text, text} | {type: audio, data: <base64 chunk>} | {type: utterance_end}
     {type: ping} | {type: stop}
Out: transcription, response_text (deltas), response_audio (one per sentence, wav base64),
     response_complete (after the turn is committed), error, pong.
mode "push_to_talk" (the default): the client ends each utterance (utterance_end).
mode "hands_free": the client streams 16 kHz PCM without pause (binary frames) and
morgan-vad finds where utterances end; speaking over an answer interrupts it
(morgan.core.hands_free has the events).
The API key comes in the handshake: an X-API-Key or Authorization header, or (for a browser,
which cannot set headers on a WebSocket) the subprotocols `morgan, bearer.<key>`; never in
the URL. The session acts for the key's owner (`user_id`, as on the HTTP API).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from morgan.core.audio import inspect_audio
from morgan.core.dependencies import get_orchestrator
from morgan.core.exceptions import InvalidInputError, PayloadTooLargeError, TurnError
from morgan.core.hands_free import HandsFree
from morgan.core.orchestrator import Orchestrator
from morgan.core.principal import acting_user
from morgan.core.rate_limit import Bucket, RateLimitedError, RateLimiter
from morgan.shared.auth import WS_SUBPROTOCOL as SUBPROTOCOL
from morgan.shared.clients import client_of_scope

log = logging.getLogger(__name__)
router = APIRouter()
_USER_ID = re.compile(r"^[A-Za-z0-9_.@:-]{1,128}$")


class _Session:
    def __init__(self) -> None:
        self.user_id: str | None = None
        self.conversation_id: str | None = None
        self.want_audio = True
        self.language: str | None = None
        self.audio = bytearray()
        self.hands_free: HandsFree | None = None
        self.window_start = time.monotonic()
        self.window_bytes = 0

    def received(self, size: int, limit: int) -> None:
        """Count a frame's bytes in this minute's budget; RateLimitedError past it."""
        now = time.monotonic()
        if now - self.window_start >= 60:
            self.window_start, self.window_bytes = now, 0
        self.window_bytes += size
        if self.window_bytes > limit:
            raise RateLimitedError(
                f"this session sent more than {limit} bytes this minute "
                "(ws_max_bytes_per_minute); reconnect and send less"
            )


async def _error(
    ws: WebSocket, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    event: dict[str, Any] = {"type": "error", "status": status, "message": message}
    if headers and "Retry-After" in headers:
        event["retry_after"] = int(headers["Retry-After"])
    await _send(ws, event)


async def _count(ws: WebSocket, *buckets: Bucket) -> None:
    """A WebSocket turn counts against its client's budgets like an HTTP request."""
    limiter: RateLimiter | None = getattr(ws.app.state, "rate_limiter", None)
    if limiter is not None:
        client = client_of_scope(ws.scope, limiter.settings().trusted_proxies)
        await limiter.check(client, *buckets)


async def _run_turn(
    ws: WebSocket, orch: Orchestrator, session: _Session, text: str,
    transcription: str | None = None, stt_ms: float = 0.0, started: float | None = None,
) -> None:  # fmt: skip
    assert session.user_id is not None
    with orch.limiter.slot(await orch.models.llm_capacity()):
        async for event in orch.stream_turn(
            session.user_id, text, session.conversation_id,
            want_audio=session.want_audio, transcription=transcription,
            stt_ms=stt_ms, started=started,
        ):  # fmt: skip
            # Known from the first event on: a hands-free turn interrupted before it
            # completes is kept in this conversation, and the next turn goes on in it.
            if "conversation_id" in event:
                session.conversation_id = event["conversation_id"]
            await _send(ws, event)


async def _send(ws: WebSocket, event: dict[str, Any]) -> None:
    """One event; a hands-free session's turn and its speech events send from different
    tasks, so every send takes the session's lock."""
    lock: asyncio.Lock = ws.state.send_lock
    async with lock:
        await ws.send_json(event)


async def _start_hands_free(ws: WebSocket, orch: Orchestrator, session: _Session) -> None:
    async def run(text: str, transcription: str | None, stt_ms: float, started: float) -> None:
        await _run_turn(ws, orch, session, text, transcription, stt_ms, started)

    session.hands_free = await HandsFree.open(
        orch, lambda event: _send(ws, event), run, lambda: _count(ws, "api", "audio"),
        session.language,
    )  # fmt: skip
    await _send(ws, {"type": "started", "mode": "hands_free", "sample_rate": 16000})


async def _end_hands_free(session: _Session) -> None:
    if session.hands_free is not None:
        hands_free, session.hands_free = session.hands_free, None
        await hands_free.close()


async def _handle(ws: WebSocket, orch: Orchestrator, session: _Session, msg: Any) -> bool:
    """Handle one message; return False when the client asked to stop."""
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise InvalidInputError('each message must be a JSON object with a "type" field')
    kind = msg["type"]
    if kind == "ping":
        await _send(ws, {"type": "pong"})
        return True
    if kind == "stop":
        return False
    if kind == "start":
        user_id = msg.get("user_id")
        if user_id is not None and (not isinstance(user_id, str) or not _USER_ID.match(user_id)):
            raise InvalidInputError("user_id takes letters, digits and _ . @ : -")
        session.user_id = acting_user(ws, user_id)
        cid = msg.get("conversation_id")
        session.conversation_id = str(cid) if cid else None
        session.want_audio = bool(msg.get("want_audio", True))
        lang = msg.get("language")
        session.language = str(lang) if lang else None
        session.audio.clear()
        mode = msg.get("mode", "push_to_talk")
        if mode not in ("push_to_talk", "hands_free"):
            raise InvalidInputError(f"mode {mode!r} is unknown; use push_to_talk or hands_free")
        await _end_hands_free(session)
        if mode == "hands_free":
            await _start_hands_free(ws, orch, session)
        return True
    if session.user_id is None:
        raise InvalidInputError('send {"type": "start"} first')
    s = orch.settings
    if kind == "text":
        text = msg.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("text message needs a non-empty text field")
        if "\x00" in text:
            raise InvalidInputError("text contains NUL (\\u0000) characters; remove them")
        if len(text) > s.max_text_chars:
            raise PayloadTooLargeError(
                f"text is {len(text)} characters; the limit is {s.max_text_chars}"
            )
        await _count(ws, "api")
        if session.hands_free is not None:
            await session.hands_free.text(text)
        else:
            await _run_turn(ws, orch, session, text)
        return True
    if kind == "audio":
        data = msg.get("data")
        try:
            chunk = base64.b64decode(str(data), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInputError("audio data must be base64") from exc
        if session.hands_free is not None:
            await session.hands_free.audio(chunk)
            return True
        if len(session.audio) + len(chunk) > s.max_audio_bytes:
            session.audio.clear()
            raise PayloadTooLargeError(
                f"utterance exceeds {s.max_audio_bytes / 1e6:.0f} MB; send utterance_end sooner"
            )
        session.audio.extend(chunk)
        return True
    if kind == "utterance_end":
        if session.hands_free is not None:
            raise InvalidInputError(
                "a hands-free session ends utterances itself; start with mode push_to_talk "
                "to end them with utterance_end"
            )
        audio, session.audio = bytes(session.audio), bytearray()
        await _count(ws, "api", "audio")
        started = time.perf_counter()
        info = inspect_audio(
            audio, content_type=None, filename=None,
            max_bytes=s.max_audio_bytes, max_seconds=s.max_audio_seconds,
        )  # fmt: skip
        text, stt_ms = await orch.transcribe(
            audio, f"utterance.{info.format}", f"audio/{info.format}", session.language
        )
        await _send(ws, {"type": "transcription", "text": text})
        if not text:
            raise InvalidInputError("no speech was recognised in the utterance")
        await _run_turn(ws, orch, session, text, text, stt_ms, started)
        return True
    raise InvalidInputError(
        f"unknown message type {kind!r}; use start, audio, text, utterance_end, ping or stop"
    )


@router.websocket("/ws/stream")
async def stream(ws: WebSocket) -> None:
    await ws.accept(
        subprotocol=SUBPROTOCOL if SUBPROTOCOL in ws.scope.get("subprotocols", []) else None
    )
    ws.state.send_lock = asyncio.Lock()
    try:
        orch = get_orchestrator(ws)
    except Exception:
        await _error(ws, 503, "core is starting up; retry in a few seconds")
        await ws.close(code=1013)
        return
    session = _Session()
    try:
        while True:
            s = orch.settings
            try:
                frame = await asyncio.wait_for(ws.receive(), s.ws_idle_timeout_seconds)
            except TimeoutError:
                await _error(ws, 408, f"no message for {s.ws_idle_timeout_seconds:g} s "
                             "(ws_idle_timeout_seconds); reconnect to go on")  # fmt: skip
                await ws.close(code=1001, reason="idle")
                return
            if frame["type"] == "websocket.disconnect":
                return
            raw, pcm = frame.get("text"), frame.get("bytes")
            try:
                session.received(len(pcm if pcm is not None else raw or ""),
                                 s.ws_max_bytes_per_minute)  # fmt: skip
            except RateLimitedError as exc:
                await _error(ws, exc.status_code, exc.message)
                await ws.close(code=1008, reason="over ws_max_bytes_per_minute")
                return
            if pcm is not None:
                await _audio_frame(ws, session, pcm)
                continue
            try:
                msg = json.loads(raw or "")
            except ValueError:
                await _error(ws, 422, "messages must be JSON text frames")
                continue
            try:
                if not await _handle(ws, orch, session, msg):
                    break
            except TurnError as exc:
                await _error(ws, exc.status_code, exc.message, exc.headers)
    except WebSocketDisconnect:
        return
    finally:
        await _end_hands_free(session)
    await ws.close(code=1000)


async def _audio_frame(ws: WebSocket, session: _Session, pcm: bytes) -> None:
    """A binary frame: PCM of a hands-free session."""
    if session.hands_free is None:
        await _error(ws, 422, "binary frames carry the PCM of a hands-free session: start with"
                     ' {"type": "start", "mode": "hands_free"}, or send push-to-talk audio as'
                     ' {"type": "audio", "data": <base64>}')  # fmt: skip
        return
    try:
        await session.hands_free.audio(pcm)
    except TurnError as exc:
        await _error(ws, exc.status_code, exc.message, exc.headers)
