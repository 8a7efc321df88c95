"""Migrations build exactly the tables the code declares, on SQLite and PostgreSQL.

Each test gets a database nobody else has touched: a new SQLite file, or a new PostgreSQL database
made (and dropped) here, so "fresh" really means empty.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from parleyd.domain.session import AgentMode, SessionSpec
from parleyd.store import Database, Repository, open_database, tables
from parleyd.store.database import alembic_config
from tests.support.postgres import pg_admin

OLD_SESSION = "sess_01HZY3N5V8Q0W1X2Y3Z4A5B6C7"
TABLES = {"api_keys", "sessions", "session_labels", "messages", "usage_intervals"}


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    # A plain (not async) fixture, like conftest's pg_url: it runs outside the test's event loop.
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    # PostgreSQL unreachable: skips (fails under CI), like conftest's pg_url.
    base_url = str(request.getfixturevalue("pg_url"))
    server, run_db = base_url.rsplit("/", 1)
    name = f"{run_db}_m{secrets.token_hex(3)}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server}/{name}"
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _diff(conn: Connection, metadata: sa.MetaData) -> list[Any]:
    # compare_type: column types too (the default since Alembic 1.12, spelled out here).
    # compare_server_default: a default the migration sets but the model lacks is drift as well.
    # No differences are filtered out: with tables.py as it is, both backends compare clean.
    ctx = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(ctx, metadata))


async def schema_diff(db: Database, metadata: sa.MetaData) -> list[Any]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_diff, metadata)


async def table_names(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def test_fresh_database_matches_the_models(fresh_url: str) -> None:
    assert tables.SessionRow.__tablename__ == "sessions"  # the models are registered
    db = await open_database(fresh_url)
    try:
        assert await table_names(db) == TABLES | {"alembic_version"}
        assert await current_revision(db) == head_revision()
        assert await schema_diff(db, SQLModel.metadata) == []
    finally:
        await db.close()


async def test_the_comparison_does_notice_drift(fresh_url: str) -> None:
    """Guards the test above: a model the migrations do not match must show up as a difference."""
    drifted = sa.MetaData()
    for table in SQLModel.metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["sessions"].append_column(sa.Column("mood", sa.String(16), nullable=True))
    drifted.tables["messages"].c["text"].type = sa.Integer()
    db = await open_database(fresh_url)
    try:
        found = await schema_diff(db, drifted)
    finally:
        await db.close()
    flat = [d for item in found for d in (item if isinstance(item, list) else [item])]
    kinds = set()
    for d in flat:
        if d[0] == "add_column":  # ("add_column", schema, table, Column)
            kinds.add((d[0], d[2], d[3].name))
        elif d[0] == "modify_type":  # ("modify_type", schema, table, column name, ...)
            kinds.add((d[0], d[2], d[3]))
    assert ("add_column", "sessions", "mood") in kinds
    assert ("modify_type", "messages", "text") in kinds


async def test_reopening_a_migrated_database_keeps_its_data(fresh_url: str) -> None:
    db = await open_database(fresh_url)
    repo = Repository(db)
    key, plaintext = await repo.create_api_key(name="k", max_session_duration_ms=1, now_ms=1)
    await repo.create_session(
        session_id=OLD_SESSION,
        api_key_id=key.id,
        spec=SessionSpec(agent_id="npc", metadata={"a": "b"}),
        rendered_situation="",
        max_duration_ms=1_000,
        resume_window_ms=1_000,
        token_hash="h",
        token_sealed=None,
        request_id=None,
        request_fingerprint=None,
        now_ms=5,
    )
    await db.close()

    for _ in range(2):  # twice: applying "head" to a database at head must be a no-op
        db = await open_database(fresh_url)
        try:
            repo = Repository(db)
            assert await repo.find_api_key(plaintext) == key
            s = await repo.get_session(OLD_SESSION, key.id)
            assert (s.agent_id, s.metadata, s.create_ms) == ("npc", {"a": "b"}, 5)
            assert await current_revision(db) == head_revision()
            assert await schema_diff(db, SQLModel.metadata) == []
        finally:
            await db.close()


async def test_upgrade_from_the_first_revision_keeps_old_rows(fresh_url: str) -> None:
    """A database made by 0001 only, with a session in it, is brought up to head by open."""
    engine = create_async_engine(fresh_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_make_revision_0001_with_a_session)
    finally:
        await engine.dispose()

    db = await open_database(fresh_url)
    try:
        assert await current_revision(db) == head_revision()
        s = await Repository(db).get_session(OLD_SESSION)
        assert s.agent_mode == AgentMode.BUILTIN
        assert (s.agent_id, s.metadata, s.expire_at_ms) == ("npc", {"a": "b"}, 1_001)
        assert await schema_diff(db, SQLModel.metadata) == []
    finally:
        await db.close()


def _make_revision_0001_with_a_session(conn: Connection) -> None:
    command.upgrade(alembic_config(conn), "0001")
    api_keys = sa.Table("api_keys", sa.MetaData(), autoload_with=conn)
    sessions = sa.Table("sessions", sa.MetaData(), autoload_with=conn)
    assert "agent_mode" not in sessions.c  # reflected as 0001 made it
    conn.execute(
        api_keys.insert().values(
            id="key_old",
            name="old",
            key_hash="hash",
            max_session_duration_ms=1_000,
            create_ms=1,
            revoked=False,
        )
    )
    values: dict[str, Any] = {c.name: "" for c in sessions.c}
    values.update(
        id=OLD_SESSION,
        api_key_id="key_old",
        agent_id="npc",
        connection_type="audio",
        scene=[],
        metadata={"a": "b"},
        max_duration_ms=1_000,
        resume_window_ms=1_000,
        render_templates=False,
        state="created",
        version=1,
        create_ms=1,
        update_ms=1,
        start_ms=None,
        end_ms=None,
        expire_at_ms=1_001,
        duration_ms=0,
        active_since_ms=None,
        end_reason=None,
        request_id=None,
        request_fingerprint=None,
        token_sealed=None,
    )
    conn.execute(sessions.insert().values(**values))


async def test_downgrade_to_base_and_back(fresh_url: str) -> None:
    db = await open_database(fresh_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "base"))
        assert await table_names(db) <= {"alembic_version"}
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "head"))
        assert await table_names(db) == TABLES | {"alembic_version"}
        assert await schema_diff(db, SQLModel.metadata) == []
    finally:
        await db.close()
