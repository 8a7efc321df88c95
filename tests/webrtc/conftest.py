"""Fixtures of the WebRTC bridge tests: a server whose bridge offers 127.0.0.1 only."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from parley.v1 import session_pb2

from tests.support.server import Running, serving
from tests.support.sessions import builtin_session

# The built-in engine answers; the bridge offers loopback candidates only.
BRIDGE = {
    "engine": "on",
    "greeting": "off",
    "pause_grace_ms": 200,
    "webrtc_host_addresses": "127.0.0.1",
}


def bridge_server(url: str, **overrides: Any) -> contextlib.AbstractAsyncContextManager[Running]:
    """`serving` with the bridge's settings (and `overrides` of them)."""
    return serving(url, **(BRIDGE | overrides))


@pytest.fixture
async def bridge(sqlite_url: str) -> AsyncIterator[Running]:
    async with bridge_server(sqlite_url) as r:
        yield r


async def new_session(
    r: Running, connection_type: int = session_pb2.CONNECTION_TYPE_AUDIO, **fields: Any
) -> tuple[str, str, str]:
    """(session id, access token, signalling URL) of a new BUILTIN session."""
    resp = await builtin_session(r, connection_type=connection_type, **fields)
    return resp.session.id, resp.access_token, resp.connect.webrtc_signaling_url
