"""Migrations against a real PostgreSQL: applied once, in order, idempotent."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from morgan.core.storage.migrations import MIGRATIONS, Migration, apply_migrations

pytestmark = pytest.mark.integration


async def test_migrations_apply_once_and_record_versions(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        first = await apply_migrations(conn)
        second = await apply_migrations(conn)
        assert first == [m.version for m in MIGRATIONS]
        assert second == []
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        expected = [(m.version, m.name) for m in MIGRATIONS]
        assert [(r["version"], r["name"]) for r in rows] == expected
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {"conversations", "turns", "schema_migrations"} <= tables
    finally:
        await conn.close()


async def test_new_migration_applies_on_top_and_concurrent_starts_do_not_race(pg_dsn: str) -> None:
    extra = (*MIGRATIONS, Migration(99, "extra_column", "ALTER TABLE turns ADD COLUMN note text"))
    conns = [await asyncpg.connect(pg_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(apply_migrations(c, extra) for c in conns))
        # Exactly one of the three applied each version; the others saw it done.
        flat = sorted(v for r in results for v in r)
        assert flat == sorted([m.version for m in extra])
        cols = await conns[0].fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name='turns'"
        )
        assert "note" in {c["column_name"] for c in cols}
    finally:
        for c in conns:
            await c.close()


async def test_failed_migration_rolls_back_and_is_not_recorded(pg_dsn: str) -> None:
    last = MIGRATIONS[-1].version
    broken = (
        *MIGRATIONS,
        Migration(last + 1, "broken", "CREATE TABLE x (id int); SELECT nope FROM y"),
    )
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await apply_migrations(conn, broken)
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == last
        assert await conn.fetchval("SELECT to_regclass('x')") is None
    finally:
        await conn.close()


@pytest.mark.unit
async def test_out_of_order_versions_are_rejected() -> None:
    bad = (Migration(2, "b", "SELECT 1"), Migration(1, "a", "SELECT 1"))
    with pytest.raises(ValueError, match="unique and increasing"):
        await apply_migrations(None, bad)  # type: ignore[arg-type]


async def test_turns_stored_before_interruptions_existed_read_as_not_interrupted(
    pg_dsn: str,
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await apply_migrations(conn, MIGRATIONS[:1]) == [1]
        cid = await conn.fetchval(
            "INSERT INTO conversations (id, user_id) VALUES (gen_random_uuid(), 'old') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO turns (id, conversation_id, user_text, assistant_text, source)"
            " VALUES (gen_random_uuid(), $1, 'hi', 'hello', 'text')",
            cid,
        )
        assert await apply_migrations(conn) == [2]
        rows = await conn.fetch("SELECT user_text, interrupted FROM turns")
        assert [(r["user_text"], r["interrupted"]) for r in rows] == [("hi", False)]
    finally:
        await conn.close()
