"""A Node.js USER and a Python AGENT in one conversation on a real `parleyd serve` process.

The Node client (tests/clients/node/interact.js: @grpc/grpc-js + @grpc/proto-loader on the repo's
proto/) joins as ROLE_USER and types a line; a Python AGENT (grpc.aio) attached to the same
AGENT_MODE_EXTERNAL session answers "You said: <text>". Needs `node` and
tests/clients/node/node_modules (`make node-deps`): without them the test skips, saying why, unless
CI is set: then it fails (the `node` fixture of conftest.py).

`EchoAgent` and `external_session` are also used by test_grpcurl_interact.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from parley.v1 import interact_pb2 as ip
from parley.v1 import message_pb2, session_pb2, session_service_pb2, session_service_pb2_grpc

from tests.clients.conftest import PROTO_DIR
from tests.support.interact import Peer, is_event, join
from tests.support.process import ParleydProcess
from tests.support.sessions import Client, create, get_session, messages, wait_state
from tests.support.tools import NODE_DIR
from tests.support.waiting import wait_until

INTERACT_JS = NODE_DIR / "interact.js"
NODE_RUN_TIMEOUT_S = 30.0  # the script gives up by itself after 20 s
STEP_TIMEOUT_S = 10.0
E = ip.EventType


def reply_to(text: str) -> str:
    return f"You said: {text}"


@dataclass
class ExternalSession(Client):
    """A session of the dev key on a `parleyd serve` process, and a client of that key."""

    target: str
    channel: grpc.aio.Channel
    session_id: str
    access_token: str

    async def get(self) -> session_pb2.Session:
        return await get_session(self, self.session_id, timeout=STEP_TIMEOUT_S)

    async def messages(self) -> list[message_pb2.Message]:
        return await messages(self, self.session_id, timeout=STEP_TIMEOUT_S)

    async def wait_state(self, state: int) -> session_pb2.Session:
        return await wait_state(self, self.session_id, state, timeout_s=STEP_TIMEOUT_S)

    async def terminate(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self.stub.TerminateSession(
                session_service_pb2.TerminateSessionRequest(session_id=self.session_id),
                metadata=self.md(),
                timeout=STEP_TIMEOUT_S,
            )


@contextlib.asynccontextmanager
async def external_session(server: ParleydProcess, **fields: Any) -> AsyncIterator[ExternalSession]:
    """A new AGENT_MODE_EXTERNAL session (dev key, Python client); terminated at the end."""
    channel = grpc.aio.insecure_channel(server.target, options=[("grpc.enable_http_proxy", 0)])
    try:
        dev = Client(session_service_pb2_grpc.SessionServiceStub(channel), server.dev_api_key)
        fields.setdefault("agent_id", "echo-npc")
        created = await create(
            dev,
            request_id=str(uuid.uuid4()),
            timeout=STEP_TIMEOUT_S,
            agent_mode=session_pb2.AGENT_MODE_EXTERNAL,
            **fields,
        )
        session = ExternalSession(
            dev.stub,
            dev.api_key,
            server.target,
            channel,
            created.session.id,
            created.access_token,
        )
        try:
            yield session
        finally:
            await session.terminate()
    finally:
        await channel.close()


@dataclass
class EchoAgent:
    """A Python AGENT on Interact that answers each user text with "You said: <text>"."""

    peer: Peer
    heard: list[ip.TextOutput] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def opened(self) -> ip.Opened:
        assert self.peer.opened is not None
        return self.peer.opened

    async def _serve(self) -> None:
        while True:
            msg = await self.peer.read(timeout=NODE_RUN_TIMEOUT_S * 2)
            if msg is None:
                return
            if msg.WhichOneof("payload") == "text" and msg.text.from_role == ip.ROLE_USER:
                self.heard.append(msg.text)
                await self.peer.send(text=ip.TextInput(text=reply_to(msg.text.text)))

    async def wait_heard(self, n: int, timeout: float = STEP_TIMEOUT_S) -> None:
        def heard() -> bool:
            if len(self.heard) >= n:
                return True
            assert self.task is not None
            if self.task.done():
                self.task.result()  # raises what ended it
                raise AssertionError(f"the agent's stream ended; saw {self.peer.kinds()}")
            return False

        await wait_until(
            heard,
            timeout_s=timeout,
            what=lambda: f"the agent heard {len(self.heard)} texts, not {n}",
        )

    async def wait_event(self, kind: int, timeout: float = STEP_TIMEOUT_S) -> None:
        await wait_until(
            lambda: any(is_event(kind)(m) for m in self.peer.seen),
            timeout_s=timeout,
            what=lambda: f"no {E.Name(kind)} for the agent: {self.peer.kinds()}",
        )


@contextlib.asynccontextmanager
async def echo_agent(session: ExternalSession) -> AsyncIterator[EchoAgent]:
    """Joins `session` as ROLE_AGENT, waits for `opened`, answers in the background; at the end
    leaves and checks that the server closed the agent's stream with OK."""
    peer = await join(
        session,
        session.session_id,
        session.access_token,
        ip.ROLE_AGENT,
        opened_timeout=STEP_TIMEOUT_S,
        client=ip.ClientInfo(name="python-echo-agent", engine="grpc.aio"),
    )
    call = peer.call
    agent = EchoAgent(peer)
    agent.task = asyncio.create_task(agent._serve())
    try:
        yield agent
    finally:
        if not agent.task.done():
            with contextlib.suppress(grpc.aio.UsageError, grpc.aio.AioRpcError):
                await peer.send(leave=ip.Leave(reason="test done"))
                await call.done_writing()
            try:
                await asyncio.wait_for(agent.task, STEP_TIMEOUT_S)
            finally:
                call.cancel()
        code = await asyncio.wait_for(call.code(), STEP_TIMEOUT_S)
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED), code


async def run_node_user(
    node: str, session: ExternalSession, text: str
) -> tuple[int, dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEYD_")}
    env["PARLEYD_PROTO_DIR"] = str(PROTO_DIR)
    proc = await asyncio.create_subprocess_exec(
        node,
        str(INTERACT_JS),
        session.target,
        session.session_id,
        session.access_token,
        text,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=NODE_DIR,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), NODE_RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(
            f"node {INTERACT_JS.name} ran longer than {NODE_RUN_TIMEOUT_S}s"
        ) from None
    assert proc.returncode is not None
    lines = stdout.decode().strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line on stdout:\n{stdout!r}\n{stderr.decode()}"
    return proc.returncode, json.loads(lines[0]), stderr.decode()


async def test_node_user_talks_to_a_python_agent(node: str, parleyd_proc: ParleydProcess) -> None:
    text = f"hello from node {uuid.uuid4().hex[:8]}"
    async with external_session(parleyd_proc, user_id="node-user") as session:
        assert (await session.get()).state == session_pb2.SESSION_STATE_CREATED
        async with echo_agent(session) as agent:
            assert agent.opened.role == ip.ROLE_AGENT
            rc, out, stderr = await run_node_user(node, session, text)
            failure = f"{out}\n{stderr}\n--- server log ---\n{parleyd_proc.log()[-3000:]}"
            assert rc == 0, failure
            assert out["ok"] is True, failure

            # What the Node user saw.
            assert out["opened_state"] == "SESSION_STATE_ACTIVE"
            assert out["participant_id"].startswith("p_")
            assert out["reply_text"] == reply_to(text)
            assert out["interaction_id"]
            assert out["sequence_ok"] is True, out["sequences"]
            assert out["sequences"] == list(range(1, len(out["kinds"]) + 1))
            assert out["kinds"][0] == "opened"
            events = out["events"]
            started = events.index("EVENT_TYPE_RESPONSE_STARTED")
            done = events.index("EVENT_TYPE_RESPONSE_DONE")
            assert started < done, events
            kinds = out["kinds"]
            assert (
                kinds.index("EVENT_TYPE_RESPONSE_STARTED")
                < kinds.index("text")
                < kinds.index("EVENT_TYPE_RESPONSE_DONE")
            ), kinds
            assert out["close_code"] == "OK"

            # What the Python agent saw: the user's text, relayed with its role, then the leave.
            assert [(t.text, t.from_role) for t in agent.heard] == [(text, ip.ROLE_USER)]
            assert agent.heard[0].from_participant_id == out["participant_id"]
            await agent.wait_event(E.EVENT_TYPE_PARTICIPANT_LEFT)

        # Both turns are in the history, in order; the user's leave paused the session.
        history = await session.messages()
        assert [(m.role, m.text) for m in history] == [
            (message_pb2.MESSAGE_ROLE_USER, text),
            (message_pb2.MESSAGE_ROLE_AGENT, reply_to(text)),
        ]
        assert [m.index for m in history] == [1, 2]
        assert history[1].interaction_id == out["interaction_id"]
        await session.wait_state(session_pb2.SESSION_STATE_PAUSED)


async def test_node_user_with_a_wrong_token_fails_loudly(
    node: str, parleyd_proc: ParleydProcess
) -> None:
    async with external_session(parleyd_proc) as session:
        session.access_token = "pat_not-the-token"
        rc, out, _ = await run_node_user(node, session, "hi")
        assert rc == 1, out
        assert out["ok"] is False
        assert out["close_code"] == "UNAUTHENTICATED", out
        assert out["opened_state"] is None
        assert out["sequences"] == []
