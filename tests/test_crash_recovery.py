"""A parleyd process killed with SIGKILL mid-conversation: the next start recovers the session."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2, session_service_pb2, session_service_pb2_grpc

from tests.clients.conftest import start_parleyd
from tests.interact_client import Peer, has

ARGS = ("--heartbeat-interval", "200ms", "--pause-grace", "100ms")


async def _join(
    stub: session_service_pb2_grpc.SessionServiceStub, sid: str, tok: str, role: int
) -> Peer:
    peer = Peer(stub.Interact(), role)
    await peer.send(join=ip.Join(session_id=sid, access_token=tok, role=role))
    peer.opened = (await peer.until(has("opened"))).opened
    return peer


async def test_kill_9_then_restart_pauses_with_history_and_usage(tmp_path: Path) -> None:
    first = start_parleyd(tmp_path, *ARGS)
    key = first.dev_api_key
    md = (("x-api-key", key),)
    try:
        async with grpc.aio.insecure_channel(first.target) as channel:
            stub = session_service_pb2_grpc.SessionServiceStub(channel)
            created = await stub.CreateSession(
                session_service_pb2.CreateSessionRequest(
                    session=session_pb2.Session(
                        agent_id="npc", agent_mode=session_pb2.AGENT_MODE_EXTERNAL
                    )
                ),
                metadata=md,
            )
            sid, tok = created.session.id, created.access_token
            agent = await _join(stub, sid, tok, ip.ROLE_AGENT)
            user = await _join(stub, sid, tok, ip.ROLE_USER)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await user.send(text=ip.TextInput(text="I will be back"))
            await agent.until(has("text"))
            await agent.send(text=ip.TextInput(text="I will wait."))
            await user.until(lambda m: has("text")(m) and m.text.is_final)
            await asyncio.sleep(1.2)  # several heartbeats
            held = loop.time() - t0
            first.proc.kill()  # SIGKILL: no drain, no clean pause
            first.proc.wait(timeout=10)
    finally:
        first.stop()

    second = start_parleyd(tmp_path, *ARGS)  # same database file
    try:
        async with grpc.aio.insecure_channel(second.target) as channel:
            stub = session_service_pb2_grpc.SessionServiceStub(channel)
            got = (
                await stub.GetSession(
                    session_service_pb2.GetSessionRequest(session_id=sid), metadata=md
                )
            ).session
            assert got.state == session_pb2.SESSION_STATE_PAUSED
            used = got.duration.ToMilliseconds() / 1000
            # Counted to the last heartbeat (every 200 ms) before the kill, never past the kill.
            assert held - 0.5 <= used <= held + 0.1
            history = await stub.ListMessages(
                session_service_pb2.ListMessagesRequest(session_id=sid), metadata=md
            )
            assert [m.text for m in history.messages] == ["I will be back", "I will wait."]
            await _join(stub, sid, tok, ip.ROLE_AGENT)
            user = await _join(stub, sid, tok, ip.ROLE_USER)
            assert user.opened is not None
            assert user.opened.session.state == session_pb2.SESSION_STATE_ACTIVE
    finally:
        second.stop()
