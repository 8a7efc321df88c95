"""The PostgreSQL server the tests make their databases on (PARLEYD_TEST_PG_URL)."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

PG_ADMIN_URL = os.environ.get("PARLEYD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pg_unreachable() -> str | None:
    """None when PostgreSQL answers on PG_ADMIN_URL, else the reason it does not."""
    u = urlparse(PG_ADMIN_URL)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 5432), timeout=2):
            return None
    except OSError as exc:
        return f"PostgreSQL not reachable at {u.hostname}:{u.port}: {exc}"


async def pg_admin(sql: str) -> None:
    """Runs one statement on the admin database (CREATE / DROP DATABASE)."""
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
