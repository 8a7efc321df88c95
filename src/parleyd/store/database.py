"""The async engine: SQLite (aiosqlite, WAL) by default, PostgreSQL (asyncpg) for scale.

Opening a database applies the Alembic migrations, so a fresh file or an empty PostgreSQL database
is ready to use and an old one is brought up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Execution option that marks a transaction as one that will write (see _configure_sqlite).
WRITE_OPTION = "parleyd_write"


@dataclass(slots=True)
class Database:
    engine: AsyncEngine
    url: str

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    async def close(self) -> None:
        await self.engine.dispose()


async def open_database(url: str, *, sqlite_synchronous: str = "NORMAL") -> Database:
    """Connects, applies migrations, and returns the ready database."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
        else:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 0
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 10
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, sqlite_synchronous)
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
    return Database(engine=engine, url=url)


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # WAL lets readers run beside the single writer; NORMAL syncs at checkpoints, which in WAL
        # mode loses no committed transaction on a process crash (FULL also survives power loss).
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A write transaction takes the write lock at BEGIN: a deferred one that reads and then
        # writes can fail with SQLITE_BUSY at once, where BEGIN IMMEDIATE waits its turn.
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    # pysqlite's own implicit BEGIN must be off for the one above to be the only one.
    @event.listens_for(engine.sync_engine, "connect", insert=True)
    def _no_implicit_begin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")
