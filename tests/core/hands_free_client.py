"""A hands-free client for tests: streams PCM in real time on /ws/stream and collects
every event with the time it arrived."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from typing import Any

import numpy as np
import soundfile
import soxr
import websockets

RATE = 16000
FRAME = 640  # 20 ms of 16-bit PCM


def speech_pcm(wav: bytes) -> bytes:
    """A WAV as 16 kHz 16-bit PCM without its quiet ends (espeak-ng leaves some)."""
    data, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    samples = np.asarray(soxr.resample(data, rate, RATE), dtype=np.float32)
    loud = np.flatnonzero(np.abs(samples) > 0.02)
    samples = samples[loud[0] : loud[-1] + 1]
    return bytes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def silence(seconds: float) -> bytes:
    return b"\x00\x00" * int(seconds * RATE)


class Session:
    """A hands-free client: sends PCM in real time, collects every event with its time."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.arrived = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                self.events.append((time.monotonic(), json.loads(raw)))
                self.arrived.set()

    async def stream(self, pcm: bytes) -> None:
        """Send `pcm` in 20 ms frames at the pace it was spoken."""
        started = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), FRAME)):
            await self.ws.send(pcm[offset : offset + FRAME])
            await asyncio.sleep(max(0.0, started + (index + 1) * 0.02 - time.monotonic()))

    async def stream_until(
        self, kind: str, timeout: float = 30.0, since: int = 0
    ) -> dict[str, Any]:
        """Silence, in real time, until an event of `kind` arrives (the `since`th event on)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.first(kind, since):
                return found
            await self.stream(silence(0.1))
        raise AssertionError(f"no {kind} within {timeout} s; got {self.kinds()}")

    def kinds(self) -> list[str]:
        return [event["type"] for _, event in self.events]

    def first(self, kind: str, since: int = 0) -> dict[str, Any] | None:
        return next((event for _, event in self.events[since:] if event["type"] == kind), None)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for _, event in self.events if event["type"] == kind]
