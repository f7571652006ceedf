"""BodyLimitMiddleware: refuse a too-large request body with 413 before reading it all."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Past this much, stop reading a refused body and just close the connection.
_DRAIN_CAP = 128 * 1024 * 1024


class BodyLimitMiddleware:
    """``limits(path) -> max bytes or None``; checks Content-Length, then counts chunks."""

    def __init__(self, app: ASGIApp, *, limits: Callable[[str], int | None]) -> None:
        self.app = app
        self.limits = limits

    async def _drain(self, receive: Receive, more: bool = True) -> None:
        """Read and drop the rest of the body (up to a cap) so the client sees our 413
        instead of a connection reset from unread data."""
        dropped = 0
        while more and dropped < _DRAIN_CAP:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            more = message.get("more_body", False)

    async def _reject(self, send: Send, limit: int, size: int | None) -> None:
        got = f"{size / 1e6:.1f} MB" if size is not None else "more"
        message = (
            f"request body is {got}; the limit for this endpoint is {limit / 1e6:.2f} MB — "
            "send less"
        )
        body = json.dumps({"error": message, "detail": "payload too large"}).encode()
        await send({
            "type": "http.response.start", "status": 413,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits(scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    size = 0
                if size > limit:
                    await self._drain(receive)
                    await self._reject(send, limit, size)
                    return
                # The server enforces Content-Length, so the body cannot grow beyond it.
                await self.app(scope, receive, send)
                return
        # No Content-Length (chunked): read up to the limit here, then replay it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await self._drain(receive, message.get("more_body", False))
                await self._reject(send, limit, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
