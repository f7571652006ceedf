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
        loader, unloader=unloads.append, service="morgan-test", model="m",
        idle_unload_seconds=0.2)
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
