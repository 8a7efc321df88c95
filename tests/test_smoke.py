from __future__ import annotations

from parley.v1 import session_pb2, session_service_pb2

from tests.support.server import Running


async def test_create_then_get(running: Running) -> None:
    created = await running.stub.CreateSession(
        session_service_pb2.CreateSessionRequest(session=session_pb2.Session(agent_id="npc")),
        metadata=running.md(),
    )
    got = await running.stub.GetSession(
        session_service_pb2.GetSessionRequest(session_id=created.session.id),
        metadata=running.md(),
    )
    assert got.session.id == created.session.id
    assert got.session.state == session_pb2.SESSION_STATE_CREATED
    assert created.access_token.startswith("pat_")
    assert created.connect.grpc_target == running.target
