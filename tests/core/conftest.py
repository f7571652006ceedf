"""Fixtures for core's tests: a fresh PostgreSQL database per test, Redis, Qdrant dirs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from morgan.core.memory.embedder import SentenceEmbedder

from tests.harness.servers import PostgresServer


def make_database(pg: PostgresServer) -> str:
    """A new empty database owned by the test role; returns its DSN."""
    name = f"core_{uuid.uuid4().hex[:12]}"
    pg.psql(f'CREATE DATABASE "{name}" OWNER "{pg.user}"')
    base, _, _ = pg.dsn.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> str:
    return make_database(postgres_server)


@pytest.fixture(scope="session")
def embedder() -> Iterator[SentenceEmbedder]:
    model = SentenceEmbedder()
    yield model
    model.close()


@pytest.fixture
def qdrant_path(tmp_path: Path) -> Path:
    return tmp_path / "qdrant"


@pytest.fixture
async def anyio_backend() -> AsyncIterator[str]:
    yield "asyncio"
