"""Shared fixtures: real databases (SQLite files, the machine's PostgreSQL) and a real server.

PostgreSQL: each test run creates its own database on PARLEYD_TEST_PG_URL (default: the local
server, trust auth) and drops it at the end. Tests isolate themselves by using their own API key
(a key sees only its own sessions). Without a reachable PostgreSQL the PostgreSQL cases skip,
saying why, unless CI is set: then they fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from parley.v1 import session_service_pb2_grpc

from parleyd.config import Settings
from parleyd.grpc.server import ParleydServer
from parleyd.manager import wall_clock_ms
from parleyd.store import Database, Repository, open_database

PG_ADMIN_URL = os.environ.get("PARLEYD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_reachable() -> str | None:
    """None when PostgreSQL answers on PG_ADMIN_URL, else the reason it does not."""
    from urllib.parse import urlparse

    u = urlparse(PG_ADMIN_URL)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 5432), timeout=2):
            return None
    except OSError as exc:
        return f"PostgreSQL not reachable at {u.hostname}:{u.port}: {exc}"


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a PostgreSQL database made for this test run (dropped afterwards)."""
    reason = _pg_reachable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    name = f"parleyd_test_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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


@dataclass
class Running:
    """A started in-process server, a channel to it, and an API key of its own."""

    server: ParleydServer
    channel: grpc.aio.Channel
    stub: session_service_pb2_grpc.SessionServiceStub
    api_key: str
    key_id: str

    @property
    def repo(self) -> Repository:
        assert self.server.repo is not None
        return self.server.repo

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def md(self, key: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", self.api_key if key is None else key),)

    async def new_key(self, name: str = "other", max_s: int = 3600) -> str:
        _, plaintext = await self.repo.create_api_key(
            name=name, max_session_duration_ms=max_s * 1000, now_ms=wall_clock_ms()
        )
        return plaintext


async def start_server(database_url: str, **overrides: Any) -> Running:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        database_url=database_url,
        expiry_interval_ms=overrides.pop("expiry_interval_ms", 100),
        drain_timeout_ms=overrides.pop("drain_timeout_ms", 500),
        log_level="WARNING",
        # The built-in engine loads speech models: only the tests that talk to it turn it on.
        engine=overrides.pop("engine", "off"),
        http_port=overrides.pop("http_port", 0),  # never the fixed default port in tests
        **overrides,
    )
    server = ParleydServer(settings)
    await server.start()
    assert server.repo is not None
    key, plaintext = await server.repo.create_api_key(
        name=f"test-{secrets.token_hex(3)}",
        max_session_duration_ms=3_600_000,
        now_ms=wall_clock_ms(),
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = session_service_pb2_grpc.SessionServiceStub(channel)
    return Running(server, channel, stub, plaintext, key.id)


@pytest.fixture
async def running(database_url: str) -> AsyncIterator[Running]:
    """A real server on 127.0.0.1:0, once over SQLite and once over PostgreSQL."""
    r = await start_server(database_url)
    try:
        yield r
    finally:
        await r.channel.close()
        await r.server.stop(0.2)


@pytest.fixture
async def running_sqlite(sqlite_url: str) -> AsyncIterator[Running]:
    r = await start_server(sqlite_url)
    try:
        yield r
    finally:
        await r.channel.close()
        await r.server.stop(0.2)
