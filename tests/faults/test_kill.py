"""Faults with real processes (issue 11): what already holds must still hold after a SIGKILL.

- The server SIGKILLed while CreateSession calls are in flight: a restart on the same SQLite
  file answers every retry (same request_id, same body) with the session and the access token
  the first answer gave, creates no session twice, and leaves a database that passes
  `PRAGMA integrity_check`.
- A USER client process SIGKILLed mid-Interact (no leave, no half-close): the session pauses
  within 3 s of the kill (default pause grace, 500 ms), and its billed duration stops there.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from pathlib import Path

import grpc
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2, session_service_pb2_grpc
from parley.v1 import session_service_pb2 as pb

from tests.support.interact import Peer, join
from tests.support.process import ParleydProcess, start_parleyd
from tests.support.sessions import Client, create, create_session, get_session, wait_state
from tests.support.sqlite import sqlite_path

CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]
CALL_TIMEOUT_S = 10.0

# -- the server killed mid-CreateSession --------------------------------------------------------

CREATES = 200
KILL_AFTER = 60  # answers
CONCURRENCY = 20

Answer = tuple[str, str]  # (session id, access token)


def request_id(i: int) -> str:
    return f"faults-kill-{i:03d}"


def body(i: int) -> dict[str, object]:
    """The Session fields of create number i: the same on the first try and on the retry."""
    return {
        "agent_id": "npc",
        "agent_mode": session_pb2.AGENT_MODE_EXTERNAL,
        "user_id": f"player-{i:03d}",
        "metadata": {"n": str(i)},
    }


async def create_many(
    client: Client,
    answered: dict[int, Answer],
    failed: dict[int, str],
    *,
    stop_when: int | None = None,
    server: ParleydProcess | None = None,
) -> None:
    """CreateSession number 0..CREATES-1, CONCURRENCY at a time, into `answered` / `failed`.

    With `stop_when`, SIGKILLs `server` as soon as that many calls were answered; calls not
    started by then are never made."""
    gate = asyncio.Semaphore(CONCURRENCY)
    killed = False

    async def one(i: int) -> None:
        nonlocal killed
        async with gate:
            if killed:
                return
            try:
                resp = await create(
                    client, request_id=request_id(i), timeout=CALL_TIMEOUT_S, **body(i)
                )
            except grpc.aio.AioRpcError as exc:
                failed[i] = f"{exc.code().name}: {exc.details()}"
                return
            answered[i] = (resp.session.id, resp.access_token)
            if stop_when is not None and not killed and len(answered) >= stop_when:
                assert server is not None
                server.proc.kill()  # SIGKILL by PID: no drain, no clean close of the database
                killed = True

    await asyncio.gather(*(one(i) for i in range(CREATES)))


async def list_all(client: Client) -> list[session_pb2.Session]:
    out: list[session_pb2.Session] = []
    token = ""
    for _ in range(CREATES // 100 + 2):
        resp = await client.stub.ListSessions(
            pb.ListSessionsRequest(page_size=100, page_token=token),
            metadata=client.md(),
            timeout=CALL_TIMEOUT_S,
        )
        out.extend(resp.sessions)
        token = resp.next_page_token
        if not token:
            return out
    raise AssertionError("ListSessions never ended")


async def test_server_sigkilled_mid_creates_then_retries_are_idempotent(tmp_path: Path) -> None:
    before: dict[int, Answer] = {}
    cut: dict[int, str] = {}
    first = start_parleyd(tmp_path, "--engine", "off")
    key = first.dev_api_key  # printed on the first start only (an empty database)
    try:
        assert key, f"no development key on stdout: {first.stdout_lines}"
        async with grpc.aio.insecure_channel(first.target, options=CHANNEL_OPTIONS) as channel:
            client = Client(session_service_pb2_grpc.SessionServiceStub(channel), key)
            await create_many(client, before, cut, stop_when=KILL_AFTER, server=first)
        first.proc.wait(timeout=10)
    finally:
        first.stop()
    assert first.proc.returncode == -9, f"parleyd was not SIGKILLed: {first.proc.returncode}"
    assert KILL_AFTER <= len(before) < CREATES, (len(before), cut)
    print(f"answered before the SIGKILL: {len(before)}; cut off in flight: {len(cut)}")

    after: dict[int, Answer] = {}
    refused: dict[int, str] = {}
    second = start_parleyd(tmp_path, "--engine", "off")  # the same database file, a new port
    try:
        async with grpc.aio.insecure_channel(second.target, options=CHANNEL_OPTIONS) as channel:
            client = Client(session_service_pb2_grpc.SessionServiceStub(channel), key)
            await create_many(client, after, refused)
            assert not refused, f"retries refused: {refused}\n{second.log()[-4000:]}"
            assert len({sid for sid, _ in after.values()}) == CREATES
            changed = {i: (before[i], after[i]) for i in before if after[i] != before[i]}
            assert not changed, f"retries answered differently (first, retry): {changed}"
            listed = await list_all(client)
            # Each start of `parleyd serve` makes one demo session (cli._demo_link, the browser
            # link it prints) with the same key: those two are not ours, and nothing else is.
            ours = [s for s in listed if s.agent_id == "npc"]
            demos = [s for s in listed if s.agent_id != "npc"]
            assert len(ours) == CREATES
            assert {s.id for s in ours} == {sid for sid, _ in after.values()}
            assert [s.metadata["demo"] for s in demos] == ["true", "true"], demos
    finally:
        second.stop()

    path = sqlite_path(second.database_url)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = conn.execute("SELECT COUNT(*) FROM sessions WHERE agent_id = 'npc'").fetchone()
        assert rows == (CREATES,)
    finally:
        conn.close()


# -- a USER process SIGKILLed mid-Interact --------------------------------------------------------

CLIENT_SCRIPT = Path(__file__).with_name("_interact_client.py")
PAUSED_WITHIN_S = 3.0  # from the kill; the bound, with the default pause grace (500 ms)
STEADY_FOR_S = 1.5
AUDIO_CHUNKS_SEEN = 50  # 1 s of the client's audio reached the AGENT before the kill


class AgentWatch:
    """Reads the AGENT's stream in the background and notes what the tests wait for."""

    def __init__(self, agent: Peer) -> None:
        self.agent = agent
        self.user_id = ""
        self.user_joined_at: float | None = None
        self.user_audio = 0
        self.user_joined = asyncio.Event()
        self.heard_user = asyncio.Event()
        self.user_left = asyncio.Event()
        self.paused = asyncio.Event()

    async def run(self, max_messages: int = 100_000) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(max_messages):
            msg = await self.agent.read(timeout=60)
            if msg is None:
                return
            self.agent.seen.clear()  # audio adds up: keep no history
            kind = msg.WhichOneof("payload")
            if kind == "event":
                ev = msg.event
                if ev.type == ip.EVENT_TYPE_PARTICIPANT_JOINED and ev.participant.role == (
                    ip.ROLE_USER
                ):
                    self.user_id = ev.participant.participant_id
                    self.user_joined_at = loop.time()
                    self.user_joined.set()
                elif ev.type == ip.EVENT_TYPE_PARTICIPANT_LEFT and (
                    ev.participant.participant_id == self.user_id
                ):
                    self.user_left.set()
                elif ev.type == ip.EVENT_TYPE_SESSION_PAUSED:
                    self.paused.set()
            elif kind == "audio" and self.user_id and msg.audio.from_participant_id == self.user_id:
                self.user_audio += 1
                if self.user_audio >= AUDIO_CHUNKS_SEEN:
                    self.heard_user.set()


async def wait_event(event: asyncio.Event, timeout: float, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"not within {timeout:g}s: {what}") from None


async def test_user_process_sigkilled_mid_interact_pauses_and_stops_usage(tmp_path: Path) -> None:
    # The default pause grace (500 ms). Heartbeats every 200 ms, so that one would surely fall
    # into the 1.5 s window below if it wrongly kept counting the dead USER's time.
    server = start_parleyd(tmp_path, "--engine", "off", "--heartbeat-interval", "200ms")
    client_proc: asyncio.subprocess.Process | None = None
    watcher: asyncio.Task[None] | None = None
    client_log = tmp_path / "client.stderr.log"
    loop = asyncio.get_running_loop()
    try:
        async with grpc.aio.insecure_channel(server.target, options=CHANNEL_OPTIONS) as channel:
            dev = Client(session_service_pb2_grpc.SessionServiceStub(channel), server.dev_api_key)
            sid, tok = await create_session(dev)
            agent = await join(dev, sid, tok, ip.ROLE_AGENT)
            watch = AgentWatch(agent)
            watcher = asyncio.create_task(watch.run())

            with client_log.open("wb") as err:
                client_proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(CLIENT_SCRIPT),
                    server.target,
                    sid,
                    tok,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=err,
                )
            assert client_proc.stdout is not None
            try:
                line = await asyncio.wait_for(client_proc.stdout.readline(), 15)
            except TimeoutError:
                line = b""
            assert line.strip() == b"joined", (
                f"client said {line!r}; its stderr:\n{client_log.read_text(errors='replace')}"
            )
            await wait_event(watch.user_joined, 5, "the AGENT told of the USER joining")
            await wait_event(watch.heard_user, 6, f"{AUDIO_CHUNKS_SEEN} USER chunks at the AGENT")
            assert (await get_session(dev, sid)).state == session_pb2.SESSION_STATE_ACTIVE

            killed_at = loop.time()
            client_proc.kill()  # SIGKILL by PID: no leave, no half-close
            await asyncio.wait_for(client_proc.wait(), 5)
            assert client_proc.returncode == -9

            paused = await wait_state(
                dev, sid, session_pb2.SESSION_STATE_PAUSED, timeout_s=PAUSED_WITHIN_S
            )
            to_paused = loop.time() - killed_at
            assert to_paused <= PAUSED_WITHIN_S
            await wait_event(watch.user_left, 2, "PARTICIPANT_LEFT of the USER at the AGENT")
            await wait_event(watch.paused, 2, "SESSION_PAUSED at the AGENT")

            assert watch.user_joined_at is not None
            joined_s = killed_at - watch.user_joined_at
            used_ms = paused.duration.ToMilliseconds()
            print(
                f"PAUSED {to_paused:.3f}s after the kill; USER joined {joined_s:.3f}s; "
                f"duration {used_ms / 1000:.3f}s"
            )
            # Billed from the join to the disconnect: the pause grace (500 ms) that follows is not
            # interaction time. The two clocks (this process's join event, the server's) differ
            # by the hops between them, a few tens of ms on loopback.
            assert abs(used_ms / 1000 - joined_s) <= 0.3

            # The usage stays where the disconnect left it: every read for 1.5 s says the same.
            readings: list[tuple[str, int]] = []
            steady_until = loop.time() + STEADY_FOR_S
            for _ in range(100):
                got = await get_session(dev, sid)
                state = session_pb2.SessionState.Name(got.state)
                readings.append((state, got.duration.ToMilliseconds()))
                if loop.time() >= steady_until:
                    break
                await asyncio.sleep(0.1)  # the poll interval of a bounded watch, not an ordering
            assert set(readings) == {("SESSION_STATE_PAUSED", used_ms)}, readings
            assert len(readings) >= 5, readings  # the window was really watched
    finally:
        if client_proc is not None and client_proc.returncode is None:
            client_proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client_proc.wait(), 5)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
        server.stop()
