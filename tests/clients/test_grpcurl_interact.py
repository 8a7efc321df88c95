"""The real grpcurl binary as the USER on the Interact bidi stream of a running `parleyd serve`.

grpcurl learns the API by reflection and reads the request stream as JSON objects on stdin
(`-d @`), sending each as soon as it is complete; it half-closes the stream when stdin ends, and
parleyd takes a half-close as the user leaving. So the test writes `join` and `text`, keeps stdin
open until the agent's reply shows on grpcurl's stdout, and only then closes it. A Python AGENT
(grpc.aio, see test_node_interact.py) answers "You said: <text>".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from parley.v1 import interact_pb2 as ip
from parley.v1 import message_pb2, session_pb2

from tests.clients.test_node_interact import (
    ExternalSession,
    echo_agent,
    external_session,
    reply_to,
)
from tests.support.process import ParleydProcess

METHOD = "parley.v1.SessionService/Interact"
GRPCURL_MAX_TIME_S = 20  # grpcurl's own limit on the whole call
RUN_DEADLINE_S = 30.0  # the test's limit on the grpcurl process
READ_CHUNK = 65_536

# grpcurl exits with 64 + the gRPC status code when the call fails with a status.
GRPCURL_STATUS_EXIT_BASE = 64
INVALID_ARGUMENT = 3
UNAUTHENTICATED = 16


@dataclass
class JsonStream:
    """grpcurl's stdout: JSON objects, pretty-printed one after another; fed in any pieces."""

    text: str = ""
    pos: int = 0
    objects: list[dict[str, Any]] = field(default_factory=list)
    _decoder: json.JSONDecoder = field(default_factory=json.JSONDecoder)

    def feed(self, chunk: str) -> None:
        self.text += chunk
        while True:
            while self.pos < len(self.text) and self.text[self.pos].isspace():
                self.pos += 1
            if self.pos >= len(self.text):
                return
            try:
                obj, end = self._decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError:
                return  # an object not complete yet: wait for more
            assert isinstance(obj, dict), f"not a JSON object on grpcurl's stdout: {obj!r}"
            self.objects.append(obj)
            self.pos = end

    def rest(self) -> str:
        """What is left that is not a complete object (should be nothing at the end)."""
        return self.text[self.pos :].strip()


@dataclass
class GrpcurlRun:
    returncode: int
    messages: list[dict[str, Any]]
    leftover: str
    stderr: str


def is_agent_reply(m: dict[str, Any]) -> bool:
    t = m.get("text")
    return bool(t and t.get("is_final") and t.get("from_role") == "ROLE_AGENT")


def event_type(m: dict[str, Any]) -> str | None:
    event = m.get("event")
    return None if event is None else str(event.get("type", "EVENT_TYPE_UNSPECIFIED"))


def kind(m: dict[str, Any]) -> str:
    keys = [k for k in m if k not in ("sequence", "server_time")]
    assert len(keys) == 1, f"one payload per message, got {keys}: {m}"
    return event_type(m) or keys[0]


async def run_grpcurl_interact(
    exe: str,
    target: str,
    requests: list[dict[str, Any]],
    *,
    close_stdin_when: Callable[[list[dict[str, Any]]], bool] | None,
) -> GrpcurlRun:
    """Runs `grpcurl -d @ ... Interact`, writing `requests` as JSON on its stdin.

    With `close_stdin_when`, stdin stays open (the stream is not half-closed) until that returns
    true for the messages read so far; without it, stdin is closed right after the requests.
    Every wait is bounded by RUN_DEADLINE_S; the process is killed when it is passed.
    """
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-plaintext",
        "-format-error",
        "-max-time",
        str(GRPCURL_MAX_TIME_S),
        "-d",
        "@",
        target,
        METHOD,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RUN_DEADLINE_S
    stream = JsonStream()

    async def close_stdin() -> None:
        assert proc.stdin is not None
        if not proc.stdin.is_closing():
            proc.stdin.close()
            # grpcurl may have given up on its input already (e.g. the call failed).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await proc.stdin.wait_closed()

    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write("".join(json.dumps(r) + "\n" for r in requests).encode())
            await proc.stdin.drain()
        if close_stdin_when is None:
            await close_stdin()
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(
                    f"grpcurl still running after {RUN_DEADLINE_S}s; read so far: "
                    f"{[kind(m) for m in stream.objects]}"
                )
            chunk = await asyncio.wait_for(proc.stdout.read(READ_CHUNK), left)
            if not chunk:
                break  # grpcurl closed its stdout: it is done
            stream.feed(chunk.decode())
            if close_stdin_when is not None and close_stdin_when(stream.objects):
                await close_stdin()
        await close_stdin()
        returncode = await asyncio.wait_for(proc.wait(), max(deadline - loop.time(), 0.1))
        stderr = await asyncio.wait_for(stderr_task, max(deadline - loop.time(), 0.1))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stderr_task.cancel()
    return GrpcurlRun(returncode, stream.objects, stream.rest(), stderr.decode(errors="replace"))


def join_request(session: ExternalSession, *, token: str | None = None) -> dict[str, Any]:
    return {
        "join": {
            "session_id": session.session_id,
            "access_token": session.access_token if token is None else token,
            "role": "ROLE_USER",
            "audio_format": {"sample_rate": 16000, "chunk_ms": 20},
            "client": {"name": "grpcurl", "engine": "grpcurl"},
        }
    }


def reply_done(messages: list[dict[str, Any]]) -> bool:
    """The whole reply is in: its final text and then RESPONSE_DONE."""
    replied = False
    for m in messages:
        replied = replied or is_agent_reply(m)
        if replied and event_type(m) == "EVENT_TYPE_RESPONSE_DONE":
            return True
    return False


async def test_grpcurl_user_gets_the_python_agents_reply(
    grpcurl_bin: str, parleyd_proc: ParleydProcess
) -> None:
    text = f"hello from grpcurl {uuid.uuid4().hex[:8]}"
    async with external_session(parleyd_proc, user_id="grpcurl-user") as session:
        async with echo_agent(session) as agent:
            run = await run_grpcurl_interact(
                grpcurl_bin,
                parleyd_proc.target,
                [join_request(session), {"text": {"text": text}}],
                close_stdin_when=reply_done,
            )
            failure = (
                f"grpcurl exit {run.returncode}\nstderr: {run.stderr}\nstdout messages: "
                f"{run.messages}\n--- server log ---\n{parleyd_proc.log()[-3000:]}"
            )
            # The half-close after the reply is a clean leave: the server ends the stream OK.
            assert run.returncode == 0, failure
            assert run.leftover == "", failure
            msgs = run.messages
            kinds = [kind(m) for m in msgs]

            # `opened` first, for an ACTIVE session, with this user's role.
            assert kinds[0] == "opened", kinds
            opened = msgs[0]["opened"]
            assert opened["session"]["id"] == session.session_id
            assert opened["session"]["state"] == "SESSION_STATE_ACTIVE"
            assert opened["role"] == "ROLE_USER"
            assert [p["role"] for p in opened.get("participants", [])] == ["ROLE_AGENT"]

            # The reply: RESPONSE_STARTED, the final text from the agent, RESPONSE_DONE.
            replies = [m for m in msgs if is_agent_reply(m)]
            assert len(replies) == 1, kinds
            reply = replies[0]["text"]
            assert reply["text"] == reply_to(text)
            assert reply["interaction_id"]
            started = kinds.index("EVENT_TYPE_RESPONSE_STARTED")
            done = kinds.index("EVENT_TYPE_RESPONSE_DONE")
            assert started < msgs.index(replies[0]) < done, kinds
            assert msgs[started]["event"]["interaction_id"] == reply["interaction_id"]
            assert msgs[done]["event"]["interaction_id"] == reply["interaction_id"]

            # Sequence numbers (uint64: strings in JSON) count 1, 2, 3, ... with no gaps.
            sequences = [int(m["sequence"]) for m in msgs]
            assert sequences == list(range(1, len(msgs) + 1)), sequences
            assert all("server_time" in m for m in msgs)

            # The agent heard exactly the typed text, from the USER.
            assert [(t.text, t.from_role) for t in agent.heard] == [(text, ip.ROLE_USER)]
            assert agent.heard[0].from_participant_id == opened["participant_id"]

        history = await session.messages()
        assert [(m.role, m.text) for m in history] == [
            (message_pb2.MESSAGE_ROLE_USER, text),
            (message_pb2.MESSAGE_ROLE_AGENT, reply_to(text)),
        ]
        assert history[1].interaction_id == reply["interaction_id"]
        await session.wait_state(session_pb2.SESSION_STATE_PAUSED)


@pytest.mark.parametrize(
    ("case", "code", "mentions"),
    [
        ("text-before-join", INVALID_ARGUMENT, "join"),
        ("wrong-token", UNAUTHENTICATED, "access token"),
    ],
)
async def test_grpcurl_bad_first_message_fails_with_a_status(
    grpcurl_bin: str, parleyd_proc: ParleydProcess, case: str, code: int, mentions: str
) -> None:
    async with external_session(parleyd_proc) as session:
        if case == "text-before-join":
            requests = [{"text": {"text": "hello?"}}, join_request(session)]
        else:
            requests = [join_request(session, token="pat_not-the-token")]
        run = await run_grpcurl_interact(
            grpcurl_bin, parleyd_proc.target, requests, close_stdin_when=None
        )
        assert run.returncode == GRPCURL_STATUS_EXIT_BASE + code, (run.returncode, run.stderr)
        assert run.messages == [], run.messages  # nothing is sent before a valid join
        start = run.stderr.find("{")
        assert start >= 0, f"no JSON status on stderr (-format-error):\n{run.stderr}"
        status = json.loads(run.stderr[start:])
        assert status["code"] == code, status
        assert mentions in status["message"], status
        if case == "text-before-join":
            violations = [
                v
                for d in status.get("details", [])
                if d["@type"].endswith("google.rpc.BadRequest")
                for v in d["field_violations"]
            ]
            assert [v["field"] for v in violations] == ["join"], status
        # The session was never joined.
        assert (await session.get()).state == session_pb2.SESSION_STATE_CREATED
