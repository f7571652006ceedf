"""Versioned schema migrations for core's PostgreSQL database.

Each migration runs once, in order, inside its own transaction, and is recorded
in ``schema_migrations``. An advisory lock serialises cores that start at the
same time, so applying migrations on every start is safe and idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# Any constant works; it only has to be the same for every core instance.
_MIGRATION_LOCK_ID = 0x6D6F7267616E  # "morgan"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "conversations_and_turns",
        """
        CREATE TABLE conversations (
            id          uuid PRIMARY KEY,
            user_id     text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX conversations_user_updated_idx
            ON conversations (user_id, updated_at DESC);
        CREATE INDEX conversations_updated_idx ON conversations (updated_at DESC);

        CREATE TABLE turns (
            id               uuid PRIMARY KEY,
            conversation_id  uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            seq              bigserial NOT NULL,
            user_text        text NOT NULL,
            assistant_text   text NOT NULL,
            source           text NOT NULL CHECK (source IN ('text', 'audio', 'stream')),
            timings          jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at       timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX turns_conversation_seq_idx ON turns (conversation_id, seq);
        """,
    ),
    # A hands-free turn the person cut off by speaking again keeps what was said so far.
    Migration(
        2,
        "interrupted_turns",
        "ALTER TABLE turns ADD COLUMN interrupted boolean NOT NULL DEFAULT false;",
    ),
)


async def current_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
    return int(version)


async def apply_migrations(
    conn: asyncpg.Connection, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[int]:
    """Apply every migration newer than the database; return the versions applied."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"migration versions must be unique and increasing, got {versions}")
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = await current_version(conn)
        for migration in migrations:
            if migration.version <= done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
    return applied
