"""The WebSocket loop the model services' streaming routes share (stt's transcription,
vad's speech events): JSON control messages and binary audio frames in, JSON events out,
a refused message answered with an error event, an oversized one closing with 1009."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastapi import WebSocket, WebSocketDisconnect

from morgan.models.errors import ModelRequestError

Send = Callable[[dict[str, Any]], Awaitable[None]]


class SocketSession(Protocol):
    async def control(self, text: str) -> list[dict[str, Any]]: ...

    async def audio(self, data: bytes) -> list[dict[str, Any]]: ...

    def after_message(self, send: Send) -> None:
        """Called after each message's replies are sent (start background work here)."""
        ...

    async def close(self) -> None: ...


def control_message(text: str, types: str) -> dict[str, Any]:
    """A control message as a JSON object with a type; 400 naming `types` otherwise."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelRequestError(
            400,
            f'message is not JSON ({exc.msg}); send {{"type": {types}}} and audio as binary frames',
        ) from exc
    if not isinstance(message, dict):
        raise ModelRequestError(400, "message must be a JSON object with a type")
    return message


async def serve_stream(websocket: WebSocket, session: SocketSession) -> None:
    await websocket.accept()

    async def send(message: dict[str, Any]) -> None:
        await websocket.send_text(json.dumps(message))

    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            try:
                if message.get("bytes") is not None:
                    replies = await session.audio(message["bytes"])
                else:
                    replies = await session.control(message.get("text") or "")
            except ModelRequestError as exc:
                await send({"type": "error", "message": exc.message, "code": exc.code})
                if exc.status == 413:
                    await websocket.close(code=1009)
                    break
                continue
            for reply in replies:
                await send(reply)
            session.after_message(send)
    except WebSocketDisconnect:
        pass
    finally:
        await session.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await websocket.close()
