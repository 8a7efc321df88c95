"""Fixtures of the WebRTC bridge tests: a server whose bridge offers 127.0.0.1 only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from parley.v1 import session_pb2, session_service_pb2

from tests.conftest import Running, start_server

SITUATION = (
    "You are Brom, the blacksmith of Oakvale. A sword costs forty gold coins. "
    "A shield costs twenty five gold coins. Your forge stands next to the old well."
)


async def bridge_server(url: str, **overrides: Any) -> Running:
    overrides.setdefault("engine", "on")
    overrides.setdefault("greeting", "off")
    overrides.setdefault("pause_grace_ms", 200)
    return await start_server(url, http_port=0, webrtc_host_addresses="127.0.0.1", **overrides)


@pytest.fixture
async def bridge(sqlite_url: str) -> AsyncIterator[Running]:
    r = await bridge_server(sqlite_url)
    try:
        yield r
    finally:
        await r.channel.close()
        await r.server.stop(0.2)


async def new_session(
    r: Running, connection_type: int = session_pb2.CONNECTION_TYPE_AUDIO, **fields: Any
) -> tuple[str, str, str]:
    """(session id, access token, signalling URL) of a new BUILTIN session."""
    resp = await r.stub.CreateSession(
        session_service_pb2.CreateSessionRequest(
            session=session_pb2.Session(
                agent_id="brom",
                profile="shopkeeper",
                situation=SITUATION,
                connection_type=connection_type,
                **fields,
            )
        ),
        metadata=r.md(),
    )
    return resp.session.id, resp.access_token, resp.connect.webrtc_signaling_url
