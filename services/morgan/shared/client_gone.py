"""Whether the current request's client has gone: its connection closed before the answer.

A model service queues requests for a slot. A caller that gave up (core, after its stage
timeout) closes its connection; the work it asked for should then not take a slot, or
an overload leaves behind a backlog of work nobody waits for. ClientGoneMiddleware
watches each HTTP request's connection once its body has been read (the server's next
message is then `http.disconnect`, when the client closes or the answer is complete) and
sets an event when the client closed first; `client_gone()` gives that event to whatever
the request is waiting on (the limiter's queue, a generation).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CURRENT: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar(
    "morgan_client_gone", default=None
)


def client_gone() -> asyncio.Event | None:
    """Set once the current request's client closed its connection before the answer was
    complete; None outside a request watched by ClientGoneMiddleware."""
    return _CURRENT.get()


def client_has_gone() -> bool:
    """Whether the current request's client has already closed its connection."""
    gone = _CURRENT.get()
    return gone is not None and gone.is_set()


class ClientGoneMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gone = asyncio.Event()
        ended = asyncio.Event()  # the server said http.disconnect: gone, or answered
        answered = False
        watcher: asyncio.Task[None] | None = None

        def disconnected() -> None:
            if not answered:
                gone.set()
            ended.set()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass  # nothing else comes after the body; never expected
            disconnected()

        async def receive_for_app() -> Message:
            nonlocal watcher
            if watcher is not None:  # the watcher owns the server's receive now
                await ended.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected()
            elif not message.get("more_body", False):
                watcher = asyncio.create_task(watch())  # the whole body is in
            return message

        async def send_for_app(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        token = _CURRENT.set(gone)
        try:
            await self.app(scope, receive_for_app, send_for_app)
        finally:
            _CURRENT.reset(token)
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
