"""SessionService calls the tests make over and over, for any client with a stub and a key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parley.v1 import message_pb2, session_pb2, session_service_pb2_grpc
from parley.v1 import session_service_pb2 as pb

from tests.support.waiting import wait_until

Metadata = tuple[tuple[str, str], ...]

# The built-in engine's test character: a village blacksmith whose prices tests ask about.
BROM = (
    "You are Brom, the blacksmith of Oakvale. A sword costs forty gold coins. "
    "A shield costs twenty five gold coins. Your forge stands next to the old well."
)


@dataclass
class Client:
    """A SessionService stub and the API key its calls carry."""

    stub: session_service_pb2_grpc.SessionServiceStub
    api_key: str

    def md(self, key: str | None = None) -> Metadata:
        """Call metadata with this client's key, or with `key` ("" and junk keys included)."""
        return (("x-api-key", self.api_key if key is None else key),)


async def create(
    c: Client,
    *,
    key: str | None = None,
    request_id: str = "",
    timeout: float | None = None,
    **fields: Any,
) -> pb.CreateSessionResponse:
    """CreateSession with these Session fields (agent_id 'npc' unless given)."""
    fields.setdefault("agent_id", "npc")
    return await c.stub.CreateSession(
        pb.CreateSessionRequest(session=session_pb2.Session(**fields), request_id=request_id),
        metadata=c.md(key),
        timeout=timeout,
    )


async def create_session(c: Client, *, external: bool = True, **fields: Any) -> tuple[str, str]:
    """(id, access token) of a new session whose AI is an AGENT of ours (or the built-in one)."""
    mode = session_pb2.AGENT_MODE_EXTERNAL if external else session_pb2.AGENT_MODE_BUILTIN
    resp = await create(c, agent_mode=mode, **fields)
    return resp.session.id, resp.access_token


async def builtin_session(
    c: Client,
    situation: str = BROM,
    connection_type: int = session_pb2.CONNECTION_TYPE_AUDIO,
    **fields: Any,
) -> pb.CreateSessionResponse:
    """A new session with Brom the blacksmith for the built-in engine to play."""
    return await create(
        c,
        agent_id="brom",
        profile="shopkeeper",
        situation=situation,
        connection_type=connection_type,
        **fields,
    )


async def get_session(
    c: Client, session_id: str, key: str | None = None, *, timeout: float | None = None
) -> session_pb2.Session:
    resp = await c.stub.GetSession(
        pb.GetSessionRequest(session_id=session_id), metadata=c.md(key), timeout=timeout
    )
    return resp.session


async def terminate(c: Client, session_id: str, key: str | None = None) -> session_pb2.Session:
    resp = await c.stub.TerminateSession(
        pb.TerminateSessionRequest(session_id=session_id), metadata=c.md(key)
    )
    return resp.session


async def disconnect(c: Client, session_id: str, key: str | None = None) -> session_pb2.Session:
    resp = await c.stub.DisconnectSession(
        pb.DisconnectSessionRequest(session_id=session_id), metadata=c.md(key)
    )
    return resp.session


async def messages(
    c: Client, session_id: str, page_size: int = 0, *, timeout: float | None = None
) -> list[message_pb2.Message]:
    """The whole history of a session, following next_page_token."""
    out: list[message_pb2.Message] = []
    token = ""
    for _ in range(100):
        resp = await c.stub.ListMessages(
            pb.ListMessagesRequest(session_id=session_id, page_size=page_size, page_token=token),
            metadata=c.md(),
            timeout=timeout,
        )
        out.extend(resp.messages)
        token = resp.next_page_token
        if not token:
            return out
    raise AssertionError("ListMessages never ended")


async def wait_state(
    c: Client, session_id: str, state: int, *, timeout_s: float = 5.0
) -> session_pb2.Session:
    """Polls GetSession until the session is in `state`; returns it then, fails after timeout_s."""
    seen: list[session_pb2.Session] = []

    async def reached() -> bool:
        seen.append(await get_session(c, session_id))
        return seen[-1].state == state

    def stayed() -> str:
        name = session_pb2.SessionState.Name
        return f"session stayed {name(seen[-1].state)}, wanted {name(state)}"

    await wait_until(reached, timeout_s=timeout_s, what=stayed)
    return seen[-1]
