"""The database goes away and comes back (issue 11): PostgreSQL behind a TCP proxy that is stopped
(listener closed, every connection cut) and started again on the same port.

While it is away:
- GetSession and CreateSession answer UNAVAILABLE (never INTERNAL), quickly, saying the database
  is unreachable;
- health says NOT_SERVING within about 2 s (the probe runs every second, and at once when a call
  finds the database gone);
- a USER's text on a live Interact stream is not relayed: its sender gets a StreamError of kind
  UNAVAILABLE on `text.text`; the USER's audio still reaches the AGENT untouched; a reply that
  ends now was shown piece by piece, so the people get RESPONSE_DONE (no final text: that one
  stands for the stored reply) and the AGENT a StreamError on `reply_end`;
- the heartbeat and expiry loops log one WARNING line each for the whole outage, no traceback.
Once it is back: health SERVING again, GetSession works, a new text is stored and relayed, and
the loops say so once (INFO). No restart.

The issue's repro is a 15 s outage; OUTAGE_S is enough to see every loop fail many rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from parleyd.domain.errors import ParleyError
from parleyd.store import open_database
from tests.support.interact import Peer, has, is_event, join
from tests.support.server import Running, serving
from tests.support.sessions import Client, create, create_session, get_session, messages
from tests.support.waiting import wait_until

USER, AGENT = ip.ROLE_USER, ip.ROLE_AGENT
OUTAGE_S = 3.0
LOOP_INTERVAL_MS = 200  # heartbeat and expiry sweep: many rounds within the outage
CALL_TIMEOUT_S = 10.0
UNAVAILABLE_WITHIN_S = 2.0
NOT_SERVING_WITHIN_S = 2.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class TcpProxy:
    """127.0.0.1:<port> → `upstream`, byte for byte. `stop()` closes the listener and cuts every
    connection (as a pulled cable with RSTs would); `start()` listens again on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        if self._server is None:  # stopped while connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        pair = {writer, up_writer}
        self._writers |= pair
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers -= pair


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, RuntimeError):
        pass
    finally:
        writer.transport.abort()


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(pg_url)
    p = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def server(pg_url: str, proxy: TcpProxy) -> AsyncIterator[Running]:
    url = make_url(pg_url).set(port=proxy.port).render_as_string(hide_password=False)
    async with serving(
        url,
        heartbeat_interval_ms=LOOP_INTERVAL_MS,
        expiry_interval_ms=LOOP_INTERVAL_MS,
        agent_wait_timeout_ms=5_000,
    ) as r:
        yield r


def pcm_chunk(n: int, samples: int = 320) -> bytes:
    """20 ms at 16 kHz, every sample holding `n`: recognisable at the other end."""
    return struct.pack(f"<{samples}h", *([n] * samples))


async def health_status(r: Running, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(r.channel)
    resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT_S)
    return int(resp.status)


async def timed_error(call: Awaitable[object]) -> tuple[grpc.aio.AioRpcError, float]:
    """The error the awaited call ended with, and how long it took to come."""
    start = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value, time.monotonic() - start


def loop_records(caplog: pytest.LogCaptureFixture, what: str, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == level and r.getMessage().startswith(what)
    ]


async def test_database_outage_is_unavailable_not_serving_and_heals(
    server: Running, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="parleyd")
    figures: dict[str, float] = {}

    # A live conversation: an external AGENT and a USER.
    sid, tok = await create_session(server)
    agent = await join(server, sid, tok, AGENT)
    user = await join(server, sid, tok, USER)
    await user.send(text=ip.TextInput(text="before"))
    assert (await agent.until(has("text"))).text.text == "before"
    # A second key with a session of its own (its key is cached by the server's auth now).
    other = Client(server.stub, await server.new_key("outage-other"))
    other_sid, _ = await create_session(other)
    # A third key the server has never seen: its check needs the database.
    unseen = Client(server.stub, await server.new_key("outage-unseen"))
    assert await health_status(server) == SERVING

    await proxy.stop()
    outage_started = time.monotonic()
    try:
        # Calls: UNAVAILABLE, never INTERNAL, fast, naming the database.
        err, took = await timed_error(get_session(server, sid, timeout=CALL_TIMEOUT_S))
        figures["GetSession UNAVAILABLE after (s)"] = took
        assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
        assert "database is unreachable" in (err.details() or "")
        assert took < UNAVAILABLE_WITHIN_S
        err, took = await timed_error(get_session(other, other_sid, timeout=CALL_TIMEOUT_S))
        assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
        # A key that is not cached cannot be checked: UNAVAILABLE too, not UNKNOWN.
        err, _ = await timed_error(get_session(unseen, other_sid, timeout=CALL_TIMEOUT_S))
        assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
        err, took = await timed_error(
            create(other, agent_mode=session_pb2.AGENT_MODE_EXTERNAL, timeout=CALL_TIMEOUT_S)
        )
        figures["CreateSession UNAVAILABLE after (s)"] = took
        assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
        assert "database is unreachable" in (err.details() or "")
        assert took < UNAVAILABLE_WITHIN_S

        # Health: NOT_SERVING for the whole server (a load balancer takes it out).
        await wait_until(
            lambda: _status_is(server, NOT_SERVING),
            timeout_s=NOT_SERVING_WITHIN_S,
            what="health stayed SERVING while the database was unreachable",
        )
        figures["health NOT_SERVING after (s)"] = time.monotonic() - outage_started
        assert await health_status(server, "parley.v1.SessionService") == NOT_SERVING

        # Live: text is refused (not stored, so not relayed); audio flows untouched.
        await user.send(text=ip.TextInput(text="during the outage"))
        refusal = await user.until(has("error"))
        assert refusal.error.code == code_pb2.UNAVAILABLE
        assert refusal.error.field == "text.text"
        assert refusal.error.message.startswith("not delivered:")
        seen_before = len(agent.seen)
        chunks = [pcm_chunk(n) for n in range(1, 6)]
        for n, c in enumerate(chunks):
            await user.send(audio=ip.AudioInput(pcm=c, sequence=n))
        got = [await agent.until(has("audio")) for _ in chunks]
        assert [m.audio.pcm for m in got] == chunks
        assert not _texts(agent, seen_before), "text written during the outage reached the AGENT"

        # A reply ending in the outage: its pieces were shown, so the people get RESPONSE_DONE
        # (never a final text that is not stored), and the AGENT hears it is not in the history.
        user_seen = len(user.seen)
        await agent.send(reply_start=ip.ReplyStart(interaction_id="int_outage"))
        await agent.send(reply_text=ip.ReplyText(text="a piece", interaction_id="int_outage"))
        await agent.send(reply_end=ip.ReplyEnd(interaction_id="int_outage"))
        await user.until(is_event(ip.EventType.EVENT_TYPE_RESPONSE_DONE))
        shown = [m.text for m in user.seen[user_seen:] if m.WhichOneof("payload") == "text"]
        assert [(t.text, t.is_final) for t in shown] == [("a piece", False)]
        not_stored = await agent.until(has("error"))
        assert not_stored.error.code == code_pb2.UNAVAILABLE
        assert not_stored.error.field == "reply_end"

        # Stay away long enough for every loop to fail round after round.
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
    finally:
        await proxy.start()
    back = time.monotonic()

    await wait_until(
        lambda: _status_is(server, SERVING),
        timeout_s=5.0,
        what="health did not say SERVING again once the database was back",
    )
    figures["health SERVING again after (s)"] = time.monotonic() - back
    assert (await get_session(server, sid, timeout=CALL_TIMEOUT_S)).id == sid
    assert (await get_session(other, other_sid, timeout=CALL_TIMEOUT_S)).id == other_sid
    seen_before = len(agent.seen)
    await user.send(text=ip.TextInput(text="after"))
    assert (await agent.until(has("text"))).text.text == "after"
    assert _texts(agent, seen_before) == ["after"]
    stored = [m.text for m in await messages(server, sid, timeout=CALL_TIMEOUT_S)]
    assert stored == ["before", "after"]

    # Logs: one WARNING per loop for the whole outage, one INFO when it works again; no ERROR
    # with a traceback.
    for loop in ("heartbeat", "expiry sweep"):
        await wait_until(
            lambda loop=loop: bool(loop_records(caplog, f"{loop} works again", logging.INFO)),
            timeout_s=3.0,
            what=f"no INFO line saying the {loop} works again",
        )
        assert len(loop_records(caplog, f"{loop} failed", logging.WARNING)) == 1, loop
    tracebacks = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info
    ]
    assert tracebacks == []
    assert any(
        r.getMessage().startswith("database unreachable: health NOT_SERVING")
        for r in caplog.records
    )
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")
    await _leave(user, agent)


def _texts(peer: Peer, since: int) -> list[str]:
    return [m.text.text for m in peer.seen[since:] if m.WhichOneof("payload") == "text"]


async def _status_is(r: Running, status: int) -> bool:
    return await health_status(r) == status


async def _leave(*peers: Peer) -> None:
    for p in peers:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await p.call.done_writing()


async def test_a_bug_in_sql_is_not_taken_for_an_outage(database_url: str) -> None:
    """Only faults of the database become UNAVAILABLE: a statement that is simply wrong still
    raises the driver's error (and ends INTERNAL in a call), on SQLite and PostgreSQL alike."""
    db = await open_database(database_url)
    try:
        with pytest.raises(DBAPIError) as err:
            await db.read(lambda conn: conn.execute(text("SELECT * FROM no_such_table")))
        assert not isinstance(err.value, ParleyError)
        assert not db.unreachable.is_set()
        await db.ping()
    finally:
        await db.close()


async def test_health_follows_the_database_without_any_call(
    server: Running, proxy: TcpProxy
) -> None:
    """No call finds the outage first: the probe alone turns health NOT_SERVING, then back."""
    assert await health_status(server) == SERVING
    await proxy.stop()
    started = time.monotonic()
    try:
        await wait_until(
            lambda: _status_is(server, NOT_SERVING),
            timeout_s=NOT_SERVING_WITHIN_S,
            what="health stayed SERVING while the database was unreachable",
        )
        print(f"health NOT_SERVING by the probe alone after (s): {time.monotonic() - started:.3f}")
    finally:
        await proxy.start()
    back = time.monotonic()
    await wait_until(
        lambda: _status_is(server, SERVING),
        timeout_s=3.0,
        what="health did not say SERVING again once the database was back",
    )
    print(f"health SERVING by the probe alone after (s): {time.monotonic() - back:.3f}")
