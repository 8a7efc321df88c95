"""A small test client for Interact: join, send, and read until a wanted message, with deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from parley.v1 import interact_pb2 as ip

from tests.support.sessions import Client

Pred = Callable[[ip.InteractResponse], bool]


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Marks a read's error as seen: a read left behind by a test that ended is no warning."""
    if not task.cancelled():
        task.exception()


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
    # A read that outlived its timeout: the next read takes it over (cancelling it would cancel
    # the whole call, which is grpc.aio's way).
    _pending: asyncio.Task[Any] | None = field(default=None, repr=False)

    async def send(self, **payload: Any) -> None:
        await self.call.write(ip.InteractRequest(**payload))

    async def read(self, timeout: float = 5.0) -> ip.InteractResponse | None:
        """The next message, or None at the end of the stream; TimeoutError when none came
        within `timeout` (the stream goes on: the next read gets that message)."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self.call.read())
            self._pending.add_done_callback(_retrieve)
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            raise TimeoutError
        task, self._pending = self._pending, None
        msg = task.result()
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
        """Everything until the end of the stream; fails when nothing comes for `timeout`."""
        out = []
        while True:
            msg = await self.read(timeout)
            if msg is None:
                return out
            out.append(msg)

    async def read_for(self, seconds: float) -> list[ip.InteractResponse]:
        """Everything that arrives within the next `seconds` (or until the stream ends): for
        checking that something does NOT happen within a window."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        out = []
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await self.read(left)
            except TimeoutError:
                break
            if msg is None:
                break
            out.append(msg)
        return out

    def kinds(self, last: int | None = None) -> list[str]:
        out = []
        for m in self.seen:
            k = m.WhichOneof("payload") or "?"
            if k == "event":
                k = ip.EventType.Name(m.event.type)
            out.append(k)
        return out if last is None else out[-last:]


async def join(
    c: Client,
    session_id: str,
    token: str,
    role: int,
    *,
    rate: int = 16_000,
    chunk_ms: int = 20,
    wait_opened: bool = True,
    opened_timeout: float = 5.0,
    **join_fields: Any,
) -> Peer:
    """Opens an Interact stream and joins; waits for `opened` unless told not to."""
    peer = Peer(c.stub.Interact(), role)
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
        msg = await peer.until(has("opened"), timeout=opened_timeout)
        peer.opened = msg.opened
    return peer
