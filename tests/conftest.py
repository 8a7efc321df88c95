"""Shared fixtures: real databases (SQLite files, the machine's PostgreSQL) and a real server.

PostgreSQL: each test run creates its own database on PARLEYD_TEST_PG_URL (default: the local
server, trust auth) and drops it at the end. Tests isolate themselves by using their own API key
(a key sees only its own sessions). Without a reachable PostgreSQL the PostgreSQL cases skip,
saying why, unless CI is set: then they fail.

The server fixtures come from tests/support/server.py, like every other server of the tests.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from parleyd.store import Database, Repository, open_database
from tests.support.postgres import PG_ADMIN_URL, pg_admin, pg_unreachable
from tests.support.require import require
from tests.support.server import Running, serving


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a PostgreSQL database made for this test run (dropped afterwards)."""
    reason = pg_unreachable()
    if reason is not None:
        require(reason)
    name = f"parleyd_test_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test that takes this runs once on a fresh SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'parleyd.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'parleyd.db'}"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def repo(db: Database) -> Repository:
    return Repository(db)


@pytest.fixture
async def running(database_url: str) -> AsyncIterator[Running]:
    """A real server on 127.0.0.1:0, once over SQLite and once over PostgreSQL."""
    async with serving(database_url) as r:
        yield r


@pytest.fixture
async def running_sqlite(sqlite_url: str) -> AsyncIterator[Running]:
    async with serving(sqlite_url) as r:
        yield r
