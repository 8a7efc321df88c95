"""A small test client for Interact: join, send, and read until a wanted message, with deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2, session_service_pb2

from tests.conftest import Running

Pred = Callable[[ip.InteractResponse], bool]


def is_event(kind: int) -> Pred:
    return lambda m: m.WhichOneof("payload") == "event" and m.event.type == kind


def has(payload: str) -> Pred:
    return lambda m: m.WhichOneof("payload") == payload


@dataclass
class Peer:
    call: Any
    role: int
    seen: list[ip.InteractResponse] = field(default_factory=list)
    opened: ip.Opened | None = None

    async def send(self, **payload: Any) -> None:
        await self.call.write(ip.InteractRequest(**payload))

    async def read(self, timeout: float = 5.0) -> ip.InteractResponse | None:
        """The next message, or None at the end of the stream."""
        msg = await asyncio.wait_for(self.call.read(), timeout)
        if msg is grpc.aio.EOF:
            return None
        self.seen.append(msg)
        return msg

    async def until(self, pred: Pred, timeout: float = 5.0) -> ip.InteractResponse:
        """Reads until a message matches; fails on timeout or end of stream."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(
                    f"no matching message within {timeout}s; saw (last 20) {self.kinds(20)}"
                )
            try:
                msg = await self.read(left)
            except TimeoutError:
                raise AssertionError(
                    f"no matching message within {timeout}s; saw (last 20) {self.kinds(20)}"
                ) from None
            if msg is None:
                raise AssertionError(
                    f"stream ended before a matching message; saw (last 20) {self.kinds(20)}"
                )
            if pred(msg):
                return msg

    async def drain_to_end(self, timeout: float = 5.0) -> list[ip.InteractResponse]:
        out = []
        while True:
            msg = await self.read(timeout)
            if msg is None:
                return out
            out.append(msg)

    def kinds(self, last: int | None = None) -> list[str]:
        out = []
        for m in self.seen:
            k = m.WhichOneof("payload") or "?"
            if k == "event":
                k = ip.EventType.Name(m.event.type)
            out.append(k)
        return out if last is None else out[-last:]


async def create_session(r: Running, *, external: bool = True, **fields: Any) -> tuple[str, str]:
    mode = session_pb2.AGENT_MODE_EXTERNAL if external else session_pb2.AGENT_MODE_BUILTIN
    fields.setdefault("agent_id", "npc")
    resp = await r.stub.CreateSession(
        session_service_pb2.CreateSessionRequest(
            session=session_pb2.Session(agent_mode=mode, **fields)
        ),
        metadata=r.md(),
    )
    return resp.session.id, resp.access_token


async def join(
    r: Running,
    session_id: str,
    token: str,
    role: int,
    *,
    rate: int = 16_000,
    chunk_ms: int = 20,
    wait_opened: bool = True,
    **join_fields: Any,
) -> Peer:
    call = r.stub.Interact()
    peer = Peer(call, role)
    await peer.send(
        join=ip.Join(
            session_id=session_id,
            access_token=token,
            role=role,
            audio_format=ip.AudioFormat(sample_rate=rate, chunk_ms=chunk_ms),
            **join_fields,
        )
    )
    if wait_opened:
        msg = await peer.until(has("opened"))
        peer.opened = msg.opened
    return peer


async def get_session(r: Running, session_id: str) -> session_pb2.Session:
    resp = await r.stub.GetSession(
        session_service_pb2.GetSessionRequest(session_id=session_id), metadata=r.md()
    )
    return resp.session


async def wait_state(r: Running, session_id: str, state: int, timeout: float = 5.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        s = await get_session(r, session_id)
        if s.state == state:
            return s
        if loop.time() > deadline:
            raise AssertionError(
                f"session stayed {session_pb2.SessionState.Name(s.state)}, wanted "
                f"{session_pb2.SessionState.Name(state)}"
            )
        await asyncio.sleep(0.02)


async def messages(r: Running, session_id: str) -> list[Any]:
    resp = await r.stub.ListMessages(
        session_service_pb2.ListMessagesRequest(session_id=session_id), metadata=r.md()
    )
    return list(resp.messages)
