"""ConversationRepository: conversations and turns in PostgreSQL over an asyncpg pool.

PostgreSQL is the source of truth: a turn is committed here before its reply is
sent. A lost connection (server restart, ``pg_terminate_backend``, network blip)
is retried with exponential backoff, at most ``max_attempts`` times. Every
statement this repository runs is safe to repeat: reads, ``DELETE``, and inserts
keyed by a client-made UUID with ``ON CONFLICT DO NOTHING``, so a retry after an
unknown commit outcome never duplicates a turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import tenacity

from morgan.core.storage.migrations import apply_migrations
from morgan.core.storage.models import Conversation, Turn

log = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that mean "the connection (or the server) went away", not "the statement is wrong".
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # connection does not exist / failure / rejected
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, pg_terminate_backend
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,  # "connection is closed", pool closing mid-call
    # A backend killed mid-statement can leave the client protocol confused
    # ("cannot switch to state ..."); the connection is dropped and a fresh one used.
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


class DatabaseUnavailableError(RuntimeError):
    """PostgreSQL could not be reached after every retry."""


class ConversationNotFoundError(LookupError):
    def __init__(self, conversation_id: str) -> None:
        super().__init__(
            f"conversation {conversation_id} does not exist (or belongs to another user); "
            "omit conversation_id to start a new one"
        )
        self.conversation_id = conversation_id


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, _CONNECTION_ERRORS)


class ConversationRepository:
    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 5,
        max_size: int = 20,
        max_attempts: int = 5,
        base_delay_s: float = 0.1,
        max_delay_s: float = 2.0,
        command_timeout_s: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._max_attempts = max_attempts
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._command_timeout_s = command_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self.retries = 0  # statements retried after a lost connection (for metrics/tests)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> list[int]:
        """Open the pool (with backoff) and apply pending migrations; return versions applied."""
        pool = await self._ensure_pool()
        return await self._with_retry(lambda: self._migrate(pool), "apply migrations")

    async def _migrate(self, pool: asyncpg.Pool) -> list[int]:
        async with pool.acquire() as conn:
            return await apply_migrations(conn)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("ConversationRepository.start() was not called")
        return self._pool

    async def ping(self) -> bool:
        try:
            await self._with_retry(self._select_one, "ping", attempts=1)
            return True
        except DatabaseUnavailableError:
            return False

    async def _select_one(self) -> None:
        async with self._acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def _ensure_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is not None:
                return self._pool
            self._pool = await self._with_retry(self._create_pool, "connect to PostgreSQL")
            return self._pool

    async def _create_pool(self) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            command_timeout=self._command_timeout_s,
        )
        if pool is None:  # asyncpg types allow it; never happens for an awaited create_pool
            raise DatabaseUnavailableError("asyncpg.create_pool returned no pool")
        return pool

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; one that failed with a connection error is closed for good
        instead of going back to the pool."""
        async with self.pool.acquire() as conn:
            try:
                yield conn
            except _CONNECTION_ERRORS:
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
                raise

    # -- retry ---------------------------------------------------------------

    async def _with_retry(
        self,
        fn: Callable[[], Awaitable[T]],
        what: str,
        *,
        attempts: int | None = None,
    ) -> T:
        """Run ``fn``; on a lost connection wait 0.1, 0.2, 0.4 ... s and run it again.

        Only idempotent operations are passed here (see the module docstring).
        """
        tries = attempts or self._max_attempts

        async def reopen_idle_connections(state: tenacity.RetryCallState) -> None:
            if self._pool is not None:
                # One lost connection usually means the server restarted or killed
                # backends: every idle connection is suspect, so reopen them lazily.
                await self._pool.expire_connections()

        def log_retry(state: tenacity.RetryCallState) -> None:
            self.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "postgres: %s failed (%s: %s); retry %d/%d in %.2fs",
                what,
                type(exc).__name__,
                exc,
                state.attempt_number,
                tries - 1,
                state.upcoming_sleep,
            )

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(tries),
            wait=tenacity.wait_exponential(multiplier=self._base_delay_s, max=self._max_delay_s),
            retry=tenacity.retry_if_exception_type(_CONNECTION_ERRORS),
            after=reopen_idle_connections,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await fn()
        except _CONNECTION_ERRORS as exc:
            raise DatabaseUnavailableError(
                f"postgres: {what} failed after {tries} attempts "
                f"({type(exc).__name__}: {exc}); is PostgreSQL up and is the DSN right?"
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    # -- conversations -------------------------------------------------------

    async def create_conversation(self, user_id: str, conversation_id: str | None = None) -> str:
        cid = conversation_id or str(uuid.uuid4())
        await self.insert_conversation(cid, user_id)
        return cid

    async def insert_conversation(self, conversation_id: str, user_id: str) -> bool:
        """True when this call made the conversation; False when it was there already (a
        turn sent again with its Idempotency-Key, to this core or another)."""

        async def op() -> str:
            async with self._acquire() as conn:
                status: str = await conn.execute(
                    "INSERT INTO conversations (id, user_id) VALUES ($1, $2) "
                    "ON CONFLICT (id) DO NOTHING",
                    uuid.UUID(conversation_id),
                    user_id,
                )
                return status

        return (await self._with_retry(op, "create conversation")) == "INSERT 0 1"

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        cid = _parse_uuid(conversation_id)
        if cid is None:
            return None

        async def op() -> asyncpg.Record | None:
            async with self._acquire() as conn:
                return await conn.fetchrow(
                    "SELECT c.id, c.user_id, c.created_at, c.updated_at, "
                    "(SELECT count(*) FROM turns t WHERE t.conversation_id = c.id) AS n "
                    "FROM conversations c WHERE c.id = $1",
                    cid,
                )

        row = await self._with_retry(op, "read conversation")
        return _conversation(row) if row is not None else None

    async def list_conversations(self, user_id: str, limit: int = 100) -> list[Conversation]:
        async def op() -> list[asyncpg.Record]:
            async with self._acquire() as conn:
                return await conn.fetch(
                    "SELECT c.id, c.user_id, c.created_at, c.updated_at, "
                    "(SELECT count(*) FROM turns t WHERE t.conversation_id = c.id) AS n "
                    "FROM conversations c WHERE c.user_id = $1 "
                    "ORDER BY c.updated_at DESC LIMIT $2",
                    user_id,
                    limit,
                )

        return [_conversation(r) for r in await self._with_retry(op, "list conversations")]

    async def recent_conversation_ids(self, limit: int) -> list[str]:
        """The ``limit`` most recently active conversations (for cache warming)."""

        async def op() -> list[asyncpg.Record]:
            async with self._acquire() as conn:
                return await conn.fetch(
                    "SELECT id FROM conversations ORDER BY updated_at DESC LIMIT $1", limit
                )

        return [str(r["id"]) for r in await self._with_retry(op, "list recent conversations")]

    async def delete_conversation(self, conversation_id: str) -> bool:
        cid = _parse_uuid(conversation_id)
        if cid is None:
            return False

        async def op() -> str:
            async with self._acquire() as conn:
                return str(await conn.execute("DELETE FROM conversations WHERE id = $1", cid))

        # A retried DELETE may report 0 rows if the first attempt committed; both mean gone.
        status = await self._with_retry(op, "delete conversation")
        return status.endswith(" 1")

    async def clear_turns(self, conversation_id: str) -> int:
        cid = _parse_uuid(conversation_id)
        if cid is None:
            return 0

        async def op() -> str:
            async with self._acquire() as conn, conn.transaction():
                status = await conn.execute("DELETE FROM turns WHERE conversation_id = $1", cid)
                await conn.execute("UPDATE conversations SET updated_at = now() WHERE id = $1", cid)
                return str(status)

        status = await self._with_retry(op, "reset conversation")
        return int(status.rsplit(" ", 1)[-1])

    # -- turns ---------------------------------------------------------------

    async def add_turn(
        self,
        conversation_id: str,
        user_text: str,
        assistant_text: str,
        *,
        source: str,
        timings: dict[str, float] | None = None,
        turn_id: str | None = None,
        interrupted: bool = False,
    ) -> Turn:
        """Commit one turn; return it once PostgreSQL has acknowledged the commit."""
        tid = uuid.UUID(turn_id) if turn_id else uuid.uuid4()
        cid = uuid.UUID(conversation_id)
        timings_json = json.dumps(timings or {})

        async def op() -> asyncpg.Record:
            async with self._acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO turns (id, conversation_id, user_text, assistant_text, "
                    "source, timings, interrupted) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) "
                    "ON CONFLICT (id) DO NOTHING",
                    tid,
                    cid,
                    user_text,
                    assistant_text,
                    source,
                    timings_json,
                    interrupted,
                )
                await conn.execute("UPDATE conversations SET updated_at = now() WHERE id = $1", cid)
                row = await conn.fetchrow(
                    f"SELECT {_TURN_COLUMNS} FROM turns WHERE id = $1",
                    tid,
                )
                if row is None:  # the conversation was deleted concurrently
                    raise ConversationNotFoundError(conversation_id)
                return row

        try:
            row = await self._with_retry(op, "store turn")
        except asyncpg.ForeignKeyViolationError as exc:
            raise ConversationNotFoundError(conversation_id) from exc
        return _turn(row)

    async def mark_interrupted(self, turn_id: str) -> bool:
        """Mark a stored turn as cut off by the person; False when there is no such turn."""
        tid = _parse_uuid(turn_id)
        if tid is None:
            return False

        async def op() -> str:
            async with self._acquire() as conn:
                status: str = await conn.execute(
                    "UPDATE turns SET interrupted = true WHERE id = $1", tid
                )
                return status

        return await self._with_retry(op, "mark turn interrupted") == "UPDATE 1"

    async def get_turn(self, turn_id: str) -> Turn | None:
        tid = _parse_uuid(turn_id)
        if tid is None:
            return None

        async def op() -> asyncpg.Record | None:
            async with self._acquire() as conn:
                return await conn.fetchrow(
                    f"SELECT {_TURN_COLUMNS} FROM turns WHERE id = $1",
                    tid,
                )

        row = await self._with_retry(op, "read turn")
        return _turn(row) if row is not None else None

    async def recent_turns(self, conversation_id: str, limit: int) -> list[Turn]:
        """The last ``limit`` turns, oldest first."""
        cid = _parse_uuid(conversation_id)
        if cid is None:
            return []

        async def op() -> list[asyncpg.Record]:
            async with self._acquire() as conn:
                return await conn.fetch(
                    f"SELECT * FROM (SELECT {_TURN_COLUMNS}, seq FROM turns"
                    " WHERE conversation_id = $1 ORDER BY seq DESC LIMIT $2) last ORDER BY seq",
                    cid,
                    limit,
                )

        return [_turn(r) for r in await self._with_retry(op, "read turns")]

    async def all_turns(self, conversation_id: str) -> list[Turn]:
        cid = _parse_uuid(conversation_id)
        if cid is None:
            return []

        async def op() -> list[asyncpg.Record]:
            async with self._acquire() as conn:
                return await conn.fetch(
                    f"SELECT {_TURN_COLUMNS} FROM turns WHERE conversation_id = $1 ORDER BY seq",
                    cid,
                )

        return [_turn(r) for r in await self._with_retry(op, "read turns")]


_TURN_COLUMNS = (
    "id, conversation_id, user_text, assistant_text, source, timings, interrupted, created_at"
)


def _parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None


def _conversation(row: Any) -> Conversation:
    return Conversation(
        id=str(row["id"]),
        user_id=str(row["user_id"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        turn_count=int(row["n"]),
    )


def _turn(row: Any) -> Turn:
    timings = row["timings"]
    if isinstance(timings, str):
        timings = json.loads(timings)
    return Turn(
        id=str(row["id"]),
        conversation_id=str(row["conversation_id"]),
        user_text=row["user_text"],
        assistant_text=row["assistant_text"],
        source=row["source"],
        created_at=row["created_at"],
        timings={k: float(v) for k, v in (timings or {}).items()},
        interrupted=bool(row["interrupted"]),
    )
