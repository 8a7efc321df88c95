"""SQLite seen from outside the server: its write lock held by another connection, and where the
server's own writes are (its one writer thread, see parleyd.store.database)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator

from parleyd.store import Database


def sqlite_path(database_url: str) -> str:
    return database_url.split(":///", 1)[1]


@contextlib.contextmanager
def sqlite_write_lock(database_url: str) -> Iterator[None]:
    """Holds SQLite's write lock from outside the server: its writes wait until we let go."""
    conn = sqlite3.connect(sqlite_path(database_url), isolation_level=None, timeout=5)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.rollback()
        conn.close()


def _runner(db: Database) -> object:
    runner = db._sqlite
    assert runner is not None, "not a SQLite file database"
    return runner


def writes_at_the_writer(db: Database) -> bool:
    """True while a group of this event loop's writes is at SQLite's writer thread."""
    return asyncio.get_running_loop() in _runner(db)._writing  # type: ignore[attr-defined]


def writes_gathered(db: Database) -> int:
    """How many of this event loop's writes wait behind the group at the writer."""
    pending = _runner(db)._pending  # type: ignore[attr-defined]
    return len(pending.get((True, asyncio.get_running_loop()), ()))


def closing(db: Database) -> bool:
    """True once `db.close()` has begun (no write is accepted any more)."""
    return bool(_runner(db)._closed)  # type: ignore[attr-defined]
