"""Bounded concurrency and idle unload, with a cheap loader instead of a model."""

from __future__ import annotations

import asyncio

import pytest
from morgan.models.errors import ServiceBusy
from morgan.models.holder import ModelHolder
from morgan.models.limiter import ConcurrencyLimiter

pytestmark = pytest.mark.unit
in_session_loop = pytest.mark.asyncio(loop_scope="session")


@in_session_loop
async def test_limiter_runs_n_queues_m_and_refuses_the_rest() -> None:
    limiter = ConcurrencyLimiter(1, 1, what="morgan-test", retry_after_seconds=3)
    release = asyncio.Event()
    order: list[str] = []

    async def job(name: str) -> None:
        async with limiter.slot():
            order.append(name)
            await release.wait()

    first = asyncio.create_task(job("first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(job("second"))
    await asyncio.sleep(0)
    assert (limiter.running, limiter.waiting) == (1, 1)
    with pytest.raises(ServiceBusy) as refused:
        async with limiter.slot():
            pass
    assert refused.value.status == 503
    assert refused.value.headers == {"Retry-After": "3"}
    assert "max_queue" in refused.value.message
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert (limiter.running, limiter.waiting) == (0, 0)


def test_limiter_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        ConcurrencyLimiter(0, 1, what="x")
    with pytest.raises(ValueError, match="max_queue"):
        ConcurrencyLimiter(1, -1, what="x")


@in_session_loop
async def test_holder_unloads_after_idle_ttl_and_reloads_on_use() -> None:
    loads: list[int] = []
    unloads: list[object] = []

    def loader() -> dict[str, int]:
        loads.append(1)
        return {"weights": len(loads)}

    holder: ModelHolder[dict[str, int]] = ModelHolder(
        loader, unloader=unloads.append, service="morgan-test", model="m", idle_unload_seconds=0.2
    )
    await holder.load()
    holder.start_idle_unloader()
    try:
        async with holder.use() as model:
            assert model == {"weights": 1}
            await asyncio.sleep(0.4)  # in use: never unloaded under a request
            assert holder.loaded
        for _ in range(50):
            if not holder.loaded:
                break
            await asyncio.sleep(0.05)
        assert not holder.loaded and holder.ready
        assert unloads == [{"weights": 1}]
        async with holder.use() as model:
            assert model == {"weights": 2}
        assert holder.loads == 2
    finally:
        await holder.stop()


@in_session_loop
async def test_holder_load_failure_is_a_503_naming_the_cause() -> None:
    def loader() -> object:
        raise FileNotFoundError("no weights in /models/llm/x")

    holder: ModelHolder[object] = ModelHolder(loader, service="morgan-test", model="x")
    with pytest.raises(Exception) as failed:
        async with holder.use():
            pass
    error = failed.value
    assert getattr(error, "status", None) == 503
    assert "no weights in /models/llm/x" in str(error)
    assert not holder.ready


@in_session_loop
async def test_limiter_resize_starts_waiters_or_holds_new_starts_back() -> None:
    limiter = ConcurrencyLimiter(1, 3, what="morgan-test")
    release = asyncio.Event()
    started: list[int] = []

    async def job(i: int) -> None:
        async with limiter.slot():
            started.append(i)
            await release.wait()

    tasks = [asyncio.create_task(job(i)) for i in range(4)]
    await asyncio.sleep(0.01)
    assert (limiter.running, limiter.waiting, started) == (1, 3, [0])
    limiter.resize(3, 3)  # two waiters start at once, first come first served
    await asyncio.sleep(0.01)
    assert (limiter.running, limiter.waiting, started) == (3, 1, [0, 1, 2])
    limiter.resize(1, 0)  # running ones finish; the waiter starts only below the new bound
    with pytest.raises(ServiceBusy):
        async with limiter.slot():
            pass
    release.set()
    await asyncio.gather(*tasks)
    assert started == [0, 1, 2, 3]
    assert (limiter.running, limiter.waiting) == (0, 0)
    with pytest.raises(ValueError, match="max_concurrency"):
        limiter.resize(0, 1)


@in_session_loop
async def test_limiter_cancelled_waiter_gives_up_its_place() -> None:
    limiter = ConcurrencyLimiter(1, 2, what="morgan-test")
    release = asyncio.Event()

    async def job() -> None:
        async with limiter.slot():
            await release.wait()

    first = asyncio.create_task(job())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(job())
    await asyncio.sleep(0)
    assert limiter.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (limiter.running, limiter.waiting) == (1, 0)
    release.set()
    await first
    assert (limiter.running, limiter.waiting) == (0, 0)


@in_session_loop
async def test_holder_idle_ttl_can_be_switched_on_and_off_while_running() -> None:
    holder: ModelHolder[object] = ModelHolder(object, service="morgan-test", model="m")
    await holder.load()
    holder.start_idle_unloader()  # TTL 0: nothing runs
    try:
        holder.set_idle_unload_seconds(3600)
        await asyncio.sleep(0.1)
        assert holder.loaded
        holder.set_idle_unload_seconds(0.1)
        for _ in range(100):
            if not holder.loaded:
                break
            await asyncio.sleep(0.05)
        assert not holder.loaded
        await holder.load()
        holder.set_idle_unload_seconds(0)
        await asyncio.sleep(0.3)
        assert holder.loaded, "TTL 0 means never unload"
    finally:
        await holder.stop()
