"""A stream to morgan-vad (its /v1/vad/stream WebSocket): PCM in, speech events out.

Found by Consul name like the model services, with core's service key and, on a fleet,
the same client certificate; one stream per hands-free session.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from morgan.core.exceptions import StageFailedError, StageUnavailableError
from morgan.shared.discovery import DiscoveryError
from morgan.shared.http_client import MorganHTTPClient

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000


class VADInstanceDown(StageUnavailableError):
    """One morgan-vad instance did not open a stream (others may)."""

    def __init__(self, message: str, instance: str) -> None:
        super().__init__(message, headers={"Retry-After": "2"})
        self.instance = instance


class VADStream:
    def __init__(self, ws: ClientConnection, instance: str) -> None:
        self._ws = ws
        self.instance = instance

    @classmethod
    async def open(
        cls,
        http: MorganHTTPClient,
        service: str,
        headers: dict[str, str],
        timeout: float,
        exclude: frozenset[str] = frozenset(),
    ) -> VADStream:
        """A started stream on one passing instance of `service` (another than those in
        `exclude` when there is one); 503 when none answers. An instance that does not
        answer is recorded as failed and Consul is asked again for the others, once."""
        try:
            return await cls._open(http, service, headers, timeout, exclude)
        except VADInstanceDown as down:
            http.discovery.invalidate(service)
            return await cls._open(http, service, headers, timeout, exclude | {down.instance})

    @classmethod
    async def _open(
        cls,
        http: MorganHTTPClient,
        service: str,
        headers: dict[str, str],
        timeout: float,
        exclude: frozenset[str],
    ) -> VADStream:
        try:
            endpoint = await http.discovery.pick(service, exclude)
        except DiscoveryError as exc:
            raise StageUnavailableError(
                f"vad: no instance of {service} to find speech with ({exc}); hands-free "
                "needs morgan-vad (services.vad in the stack), push-to-talk works without",
                headers={"Retry-After": "5"},
            ) from exc
        url = "ws" + endpoint.url.removeprefix("http") + "/v1/vad/stream"
        secure = endpoint.scheme == "https"
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                ssl=http.ssl_context if secure else None,
                open_timeout=timeout,
                proxy=None,
                compression=None,
            )
            await ws.send(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE}))
            reply = json.loads(await ws.recv())
        except (OSError, TimeoutError, WebSocketException) as exc:
            http.discovery.record_failure(endpoint)
            raise VADInstanceDown(
                f"vad: the morgan-vad instance {service} at {endpoint.url} did not open a "
                f"stream ({exc})",
                endpoint.id,
            ) from exc
        if reply.get("type") != "started":
            await ws.close()
            raise StageFailedError(f"vad: {service} refused the stream: {reply}")
        return cls(ws, endpoint.id)

    async def send(self, pcm: bytes) -> None:
        await self._ws.send(pcm)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Speech events until the stream closes; an error event from the service ends it."""
        async for raw in self._ws:
            event = json.loads(raw)
            if event.get("type") == "error":
                raise StageFailedError(f"vad: {self.instance}: {event.get('message')}")
            yield event

    async def close(self) -> None:
        try:
            await self._ws.close()
        except Exception as exc:  # closing a stream that is already gone
            log.debug("closing the vad stream: %s", exc)
