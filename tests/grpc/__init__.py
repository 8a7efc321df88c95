"""Tests of SessionService over the real in-process server, and helpers only they use.

Creating sessions, reading them and waiting are in tests/support (every test directory uses them).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from parley.v1 import session_pb2
from parley.v1 import session_service_pb2 as pb

from parleyd.domain.lifecycle import SessionEvent
from parleyd.manager import SessionManager
from tests.support.server import Running

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def ms_of(value: Timestamp | Duration) -> int:
    return value.seconds * 1000 + value.nanos // 1_000_000


def secs(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def ts_ms(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def list_all(r: Running, key: str | None = None, **filters: Any) -> list[session_pb2.Session]:
    """Every session of the key matching the filters, following next_page_token."""
    out: list[session_pb2.Session] = []
    token = ""
    for _ in range(1000):
        resp = await r.stub.ListSessions(
            pb.ListSessionsRequest(page_size=100, page_token=token, **filters), metadata=r.md(key)
        )
        out.extend(resp.sessions)
        token = resp.next_page_token
        if not token:
            return out
    raise AssertionError("ListSessions never returned an empty next_page_token")


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a call ends with; fails the test when it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def status_details(err: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in err.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    return None


def bad_fields(err: grpc.aio.AioRpcError) -> list[str]:
    """Field names of the google.rpc.BadRequest details of an INVALID_ARGUMENT error."""
    status = status_details(err)
    assert status is not None, f"no {STATUS_DETAILS_KEY} in {err!r}"
    assert status.code == err.code().value[0]
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


async def db_snapshot(r: Running, key_ids: Iterable[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row that belongs to the given API keys, in a stable order."""
    ids = sorted(key_ids)
    sessions_of = "SELECT id FROM sessions WHERE api_key_id IN :ids"
    queries = {
        "api_keys": "SELECT * FROM api_keys WHERE id IN :ids ORDER BY id",
        "sessions": "SELECT * FROM sessions WHERE api_key_id IN :ids ORDER BY id",
        "session_labels": f"SELECT * FROM session_labels WHERE session_id IN ({sessions_of}) "
        "ORDER BY session_id, key",
        "messages": f"SELECT * FROM messages WHERE session_id IN ({sessions_of}) "
        "ORDER BY session_id, idx",
        "usage_intervals": "SELECT * FROM usage_intervals WHERE api_key_id IN :ids ORDER BY id",
    }
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with r.repo._engine.connect() as conn:
        for table, sql in queries.items():
            stmt = sa.text(sql).bindparams(sa.bindparam("ids", expanding=True))
            rows = (await conn.execute(stmt, {"ids": ids})).all()
            out[table] = [tuple(row) for row in rows]
    return out


def manager(r: Running) -> SessionManager:
    assert r.server.manager is not None
    return r.server.manager


async def join(r: Running, session_id: str) -> None:
    """Makes a session ACTIVE as a live USER joining would (the Interact stream is not built)."""
    await manager(r).apply(session_id, SessionEvent.JOIN)


async def key_id_of(r: Running, plaintext: str) -> str:
    key = await r.repo.find_api_key(plaintext)
    assert key is not None
    return key.id
