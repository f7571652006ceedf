"""A steady, bounded load of turns (text or spoken) through the lab's gateway, recorded
per request.

`total` requests are sent at evenly spaced times over `duration_s` (each on its own,
so a slow answer does not hold the next one back), from this machine to the lab's
gateway only. Each turn carries its own Idempotency-Key, as Morgan's clients send, so
the gateway may hand a turn whose core died mid-request to another core. Every answer
is kept: when it was sent, how long it took, its status and, for a 200, the turn's id
(read back from PostgreSQL afterwards).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx

# Turns a second a load may ask of the lab's fleet while one of its two llm instances
# is gone (a host stopped or cut off). Both llama.cpp instances share this machine's two
# cores and together serve about 2 turns/s (docs/performance.md, closed loop); in a whole
# `make test` run a turn takes several times longer than on an idle lab (p50 0.7 s
# against 0.1 s). At 2 turns/s the one instance left was saturated, its queue full and
# core refused turns as overloaded 40 s after the host was back (a full run's host-loss
# test). What is left must be able to carry the load, or the test measures the lab's
# CPU instead of the failover.
ONE_LLM_LOST_TURNS_PER_S = 1.0


@dataclass(frozen=True)
class Answer:
    sent_s: float  # since the load started
    seconds: float
    status: int  # 0: no HTTP answer at all
    detail: str  # the whole body (or the transport error), never cut
    turn_id: str | None = None
    instance: str | None = None
    replayed: bool = False  # answered from the stored turn (the key had been seen)
    transcription: str | None = None
    spoken: bool = False  # the reply came with audio
    warning: str | None = None
    reply: str | None = None  # the reply's text
    kind: str | None = None  # an error's class: the body's "detail" ("storage unavailable")


@dataclass
class LoadReport:
    name: str
    answers: list[Answer] = field(default_factory=list)

    @property
    def failed(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]

    @property
    def acknowledged(self) -> list[str]:
        return [a.turn_id for a in self.answers if a.status == 200 and a.turn_id]

    def recovery_s(self, since_s: float) -> float:
        """Seconds from `since_s` until the last failed request (0: none failed after)."""
        late = [a.sent_s + a.seconds for a in self.failed if a.sent_s + a.seconds >= since_s]
        return max(late) - since_s if late else 0.0

    def why_failed(self, since_s: float, first: int = 5) -> str:
        """An assertion's message: the summary, when the failures came and the first few
        answers (the captured output that names each one may not reach the reader)."""
        shown = "; ".join(
            f"at {a.sent_s:.1f} s after {a.seconds:.1f} s:"
            f" {a.status} {a.kind or ''} {a.detail[:150]}"
            for a in self.failed[:first]
        )
        spread = (
            f" (sent from {self.failed[0].sent_s:.1f} s to {self.failed[-1].sent_s:.1f} s)"
            if self.failed
            else ""
        )
        return f"{self.summary(since_s)}{spread}; first: {shown}"

    def summary(self, since_s: float) -> str:
        codes: dict[int, int] = {}
        for a in self.failed:
            codes[a.status] = codes.get(a.status, 0) + 1
        times = sorted(a.seconds for a in self.answers)
        median = times[len(times) // 2] if times else 0.0
        instances = len({a.instance for a in self.answers if a.instance})
        replayed = sum(a.replayed for a in self.answers)
        return (
            f"[{self.name}] sent {len(self.answers)}, failed {len(self.failed)} {codes},"
            f" recovered {self.recovery_s(since_s):.1f} s after the fault, answers p50"
            f" {median:.1f} s / max {times[-1] if times else 0.0:.1f} s, from {instances} cores,"
            f" {replayed} answered from the stored turn; {self.timeline()}"
        )

    def timeline(self, width_s: float = 10.0) -> str:
        """The slowest answer of the turns sent in each `width_s` window, and how many of
        them failed: when the fleet was slow, not only how slow it got at worst."""
        windows: dict[int, list[Answer]] = {}
        for a in self.answers:
            windows.setdefault(int(a.sent_s // width_s), []).append(a)
        parts = []
        for w, answers in sorted(windows.items()):
            failed = sum(a.status != 200 for a in answers)
            worst = max(a.seconds for a in answers)
            parts.append(
                f"{w * width_s:.0f}s: {worst:.1f}" + (f" ({failed} failed)" if failed else "")
            )
        return f"slowest answer of the turns sent from: {', '.join(parts)}"


Send = Callable[[httpx.AsyncClient, int, dict[str, str]], Awaitable[httpx.Response]]


async def bounded_load(
    name: str,
    gateway_url: str,
    api_key: str,
    ca_file: Path,
    send: Send,
    *,
    total: int,
    duration_s: float,
    sticky: bool = False,
) -> LoadReport:
    """`send(client, i, headers)` for i in range(total), at evenly spaced times.

    Without `sticky` there is no cookie jar: each request is a new client to the gateway
    (no core affinity), so the load spreads over every core as many people's would. With
    it, the client keeps the gateway's affinity cookie, as a browser does, and is sent to
    the same core until that one leaves."""
    assert total <= 400 and duration_s <= 360, "chaos loads are bounded"
    report = LoadReport(name)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    cookies = None if sticky else CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    async with httpx.AsyncClient(base_url=gateway_url.rstrip("/"), verify=str(ca_file),
                                 headers={"X-API-Key": api_key}, timeout=60,
                                 limits=limits, cookies=cookies) as client:  # fmt: skip
        start = time.monotonic()
        run = uuid.uuid4().hex[:12]

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, start + i * duration_s / total - time.monotonic()))
            sent = time.monotonic()
            try:
                resp = await send(client, i, {"Idempotency-Key": f"{name}-{run}-{i}"})
            except httpx.HTTPError as exc:
                report.answers.append(Answer(sent - start, time.monotonic() - sent, 0,
                                             f"{type(exc).__name__}: {exc}"))  # fmt: skip
                return
            took = time.monotonic() - sent
            body = _json_object(resp)
            ok = resp.status_code == 200
            answer = Answer(sent - start, took, resp.status_code, resp.text,
                            body.get("turn_id"), resp.headers.get("x-morgan-instance"),
                            resp.headers.get("idempotent-replayed") == "true",
                            body.get("transcription"), bool(body.get("audio_base64")),
                            body.get("warning"), body.get("text"),
                            None if ok else body.get("detail"))  # fmt: skip
            report.answers.append(answer)

        await asyncio.gather(*(one(i) for i in range(total)))
    report.answers.sort(key=lambda a: a.sent_s)
    for a in report.failed:
        print(f"[{name}] failed at {a.sent_s:.1f} s after {a.seconds:.1f} s: {a.status} {a.detail}")
    return report


def _json_object(resp: httpx.Response) -> dict[str, Any]:
    """The body as a JSON object; {} when it is not one (a proxy's plain-text 502)."""
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def text_load(
    name: str,
    gateway_url: str,
    api_key: str,
    ca_file: Path,
    *,
    total: int,
    duration_s: float,
    sticky: bool = False,
) -> LoadReport:
    """Text turns, each in a conversation of its own."""

    def send(client: httpx.AsyncClient, i: int, headers: dict[str, str]) -> Any:
        body = {"text": f"{name} turn {i}", "user_id": f"chaos-{name}"}
        return client.post("/api/text", json=body, headers=headers)

    return await bounded_load(name, gateway_url, api_key, ca_file, send, total=total,
                              duration_s=duration_s, sticky=sticky)  # fmt: skip


async def audio_load(
    name: str,
    gateway_url: str,
    api_key: str,
    ca_file: Path,
    wav: bytes,
    *,
    total: int,
    duration_s: float,
) -> LoadReport:
    """Spoken turns (the same recording each time), answered with speech."""

    def send(client: httpx.AsyncClient, i: int, headers: dict[str, str]) -> Any:
        return client.post("/api/audio", files={"file": ("turn.wav", wav, "audio/wav")},
                           data={"user_id": f"chaos-{name}", "want_audio": "true"},
                           headers=headers)  # fmt: skip

    return await bounded_load(name, gateway_url, api_key, ca_file, send, total=total,
                              duration_s=duration_s)  # fmt: skip
