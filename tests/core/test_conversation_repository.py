"""ConversationRepository against a real PostgreSQL, including dropped connections."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from morgan.core.storage.conversations import (
    ConversationNotFoundError,
    ConversationRepository,
    DatabaseUnavailableError,
)

from tests.core.conftest import make_database
from tests.harness.servers import PostgresServer

pytestmark = pytest.mark.integration


async def test_pool_sizes_and_turn_roundtrip(pg_dsn: str) -> None:
    repo = ConversationRepository(pg_dsn)
    assert await repo.start() == [1, 2]
    try:
        assert repo.pool.get_min_size() == 5
        assert repo.pool.get_max_size() == 20
        assert repo.pool.get_size() >= 5
        cid = await repo.create_conversation("alice")
        for i in range(3):
            await repo.add_turn(cid, f"q{i}", f"a{i}", source="text", timings={"llm_ms": i})
        turns = await repo.all_turns(cid)
        assert [(t.user_text, t.assistant_text) for t in turns] == [
            ("q0", "a0"),
            ("q1", "a1"),
            ("q2", "a2"),
        ]
        assert turns[2].timings == {"llm_ms": 2.0}
        assert [t.user_text for t in await repo.recent_turns(cid, 2)] == ["q1", "q2"]
        conv = await repo.get_conversation(cid)
        assert conv is not None and conv.user_id == "alice" and conv.turn_count == 3
        assert await repo.get_conversation(str(uuid.uuid4())) is None
        assert await repo.get_conversation("not-a-uuid") is None
    finally:
        await repo.close()


async def test_an_interrupted_turn_is_stored_or_marked_as_such(pg_dsn: str) -> None:
    repo = ConversationRepository(pg_dsn)
    await repo.start()
    try:
        cid = await repo.create_conversation("carol")
        cut = await repo.add_turn(cid, "tell me", "Once upon", source="stream", interrupted=True)
        done = await repo.add_turn(cid, "and then", "They lived.", source="stream")
        assert (cut.interrupted, done.interrupted) == (True, False)
        assert await repo.mark_interrupted(done.id) is True
        assert await repo.mark_interrupted(str(uuid.uuid4())) is False
        assert await repo.mark_interrupted("not-a-uuid") is False
        stored = await repo.all_turns(cid)
        assert [(t.assistant_text, t.interrupted) for t in stored] == [
            ("Once upon", True),
            ("They lived.", True),
        ]
        assert [t.interrupted for t in await repo.recent_turns(cid, 5)] == [True, True]
    finally:
        await repo.close()


async def test_same_turn_id_twice_stores_one_turn(pg_dsn: str) -> None:
    repo = ConversationRepository(pg_dsn)
    await repo.start()
    try:
        cid = await repo.create_conversation("bob")
        tid = str(uuid.uuid4())
        await repo.add_turn(cid, "hi", "hello", source="text", turn_id=tid)
        await repo.add_turn(cid, "hi", "hello", source="text", turn_id=tid)
        assert len(await repo.all_turns(cid)) == 1
    finally:
        await repo.close()


async def test_list_recent_delete_and_reset(pg_dsn: str) -> None:
    repo = ConversationRepository(pg_dsn)
    await repo.start()
    try:
        a = await repo.create_conversation("carol")
        b = await repo.create_conversation("carol")
        await repo.create_conversation("dave")
        await repo.add_turn(a, "x", "y", source="text")  # a becomes most recent
        listed = await repo.list_conversations("carol")
        assert [c.id for c in listed] == [a, b]
        assert (await repo.recent_conversation_ids(1)) == [a]
        assert await repo.clear_turns(a) == 1
        assert await repo.all_turns(a) == []
        assert await repo.delete_conversation(b) is True
        assert await repo.delete_conversation(b) is False
        assert [c.id for c in await repo.list_conversations("carol")] == [a]
        with pytest.raises(ConversationNotFoundError):
            await repo.add_turn(b, "x", "y", source="text")
    finally:
        await repo.close()


async def test_terminated_backends_mid_run_lose_no_turn(
    postgres_server: PostgresServer, pg_dsn: str
) -> None:
    repo = ConversationRepository(pg_dsn, base_delay_s=0.05)
    await repo.start()
    dbname = pg_dsn.rsplit("/", 1)[1]
    try:
        cid = await repo.create_conversation("erin")
        stop = asyncio.Event()

        async def killer() -> int:
            kills = rounds = 0
            while rounds < 4:  # writers keep going until four rounds have killed backends
                out = await asyncio.to_thread(
                    postgres_server.psql,
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()",
                )
                killed = int(out.strip() or 0)
                kills += killed
                rounds += 1 if killed else 0
                await asyncio.sleep(0.1)
            stop.set()
            return kills

        async def writer(n: int) -> list[str]:
            acked: list[str] = []
            i = 0
            while not stop.is_set() or i < 5:
                await repo.add_turn(cid, f"w{n}-{i}", "ok", source="text")
                acked.append(f"w{n}-{i}")
                i += 1
                await asyncio.sleep(0.01)
            return acked

        kill_task = asyncio.create_task(killer())
        batches = await asyncio.gather(*(writer(n) for n in range(8)))
        kills = await kill_task
        turns = await repo.all_turns(cid)
        assert kills > 0, "the test never terminated a backend"
        assert repo.retries > 0, "no statement was retried; the drop was not exercised"
        acked = [t for batch in batches for t in batch]
        assert sorted(t.user_text for t in turns) == sorted(acked)  # all acked, none twice
    finally:
        await repo.close()


@pytest.mark.slow
async def test_postgres_restart_is_survived_and_down_gives_clear_error(tmp_path: Path) -> None:
    with PostgresServer.run(tmp_path) as pg:
        dsn = make_database(pg)
        repo = ConversationRepository(dsn, base_delay_s=0.2, max_delay_s=1.0)
        await repo.start()
        try:
            cid = await repo.create_conversation("frank")
            await repo.add_turn(cid, "before", "restart", source="text")
            pg.stop()
            with pytest.raises(DatabaseUnavailableError, match="is PostgreSQL up"):
                await repo.recent_turns(cid, 5)
            pg.start()
            await repo.add_turn(cid, "after", "restart", source="text")
            assert [t.user_text for t in await repo.all_turns(cid)] == ["before", "after"]
        finally:
            await repo.close()
