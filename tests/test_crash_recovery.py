"""A parleyd process killed with SIGKILL mid-conversation: the next start recovers the session."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2, session_service_pb2_grpc

from tests.support.interact import has, join
from tests.support.process import start_parleyd
from tests.support.sessions import Client, create_session, get_session, messages
from tests.support.sqlite import sqlite_path
from tests.support.waiting import wait_until

HEARTBEAT_MS = 200
ARGS = ("--heartbeat-interval", f"{HEARTBEAT_MS}ms", "--pause-grace", "100ms")


def persisted_usage_ms(database_url: str, session_id: str) -> int:
    """How much ACTIVE time of the session's open interval the heartbeats have stored so far."""
    conn = sqlite3.connect(f"file:{sqlite_path(database_url)}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT MAX(end_ms - start_ms) FROM usage_intervals WHERE session_id = ? AND is_open",
            (session_id,),
        ).fetchone()
    finally:
        conn.close()
    return int(row[0] or 0)


async def test_kill_9_then_restart_pauses_with_history_and_usage(tmp_path: Path) -> None:
    first = start_parleyd(tmp_path, *ARGS)
    key = first.dev_api_key  # printed on the first start only (an empty database)
    try:
        async with grpc.aio.insecure_channel(first.target) as channel:
            dev = Client(session_service_pb2_grpc.SessionServiceStub(channel), key)
            sid, tok = await create_session(dev)
            agent = await join(dev, sid, tok, ip.ROLE_AGENT)
            user = await join(dev, sid, tok, ip.ROLE_USER)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await user.send(text=ip.TextInput(text="I will be back"))
            await agent.until(has("text"))
            await agent.send(text=ip.TextInput(text="I will wait."))
            await user.until(lambda m: has("text")(m) and m.text.is_final)
            # Several heartbeats have stored the usage: at least 1 s of it.
            await wait_until(
                lambda: persisted_usage_ms(first.database_url, sid) >= 5 * HEARTBEAT_MS,
                timeout_s=10,
                interval_s=HEARTBEAT_MS / 1000 / 4,
                what="heartbeats storing 1 s of usage",
            )
            held = loop.time() - t0
            first.proc.kill()  # SIGKILL: no drain, no clean pause
            first.proc.wait(timeout=10)
    finally:
        first.stop()

    second = start_parleyd(tmp_path, *ARGS)  # same database file
    try:
        async with grpc.aio.insecure_channel(second.target) as channel:
            dev = Client(session_service_pb2_grpc.SessionServiceStub(channel), key)
            got = await get_session(dev, sid)
            assert got.state == session_pb2.SESSION_STATE_PAUSED
            used = got.duration.ToMilliseconds() / 1000
            # Counted to the last heartbeat (every 200 ms) before the kill, never past the kill.
            assert held - 0.5 <= used <= held + 0.1
            assert [m.text for m in await messages(dev, sid)] == ["I will be back", "I will wait."]
            await join(dev, sid, tok, ip.ROLE_AGENT)
            user = await join(dev, sid, tok, ip.ROLE_USER)
            assert user.opened is not None
            assert user.opened.session.state == session_pb2.SESSION_STATE_ACTIVE
    finally:
        second.stop()
