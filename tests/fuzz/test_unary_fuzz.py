"""A structure-aware fuzzer of every unary RPC of SessionService, against a live server.

The RPCs come from the service descriptor (only Interact, the one streaming RPC, is left to
test_interact_fuzz.py), and each request from its message descriptor (tests/fuzz/strategies.py),
with real session ids, page tokens and an SDP offer mixed in so that requests also get past the
first checks. A second test sends corrupted encodings of valid requests as raw bytes.

Invariants, per call: the status is one of ALLOWED (never UNKNOWN or INTERNAL), the call ends
within its deadline, an OK answer parses as the method's response type, error details (when
sent) are a google.rpc.Status with the call's code, and the whole error fits in a client's
default 8 KiB metadata limit. After every example: the server's call log (`parleyd.rpc`) shows
exactly this call, ended with the status the client saw; no ERROR log record from parleyd (or
from grpc or asyncio, which would be an exception escaping parleyd); the database is consistent
(tests/fuzz/harness.py, `database_problems`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as _descriptor
from google.protobuf.message_factory import GetMessageClass
from google.rpc import status_pb2
from hypothesis import event, given
from hypothesis import strategies as st
from parley.v1 import session_pb2

from parleyd.domain.lifecycle import SessionEvent
from parleyd.domain.session import WRITABLE_FIELDS, AgentMode, MessageRole, SessionSpec
from tests.fuzz.harness import (
    SERVICE,
    SERVICE_PATH,
    LiveServer,
    database_problems,
    error_records,
    live_server,
    rpc_outcomes,
)
from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.strategies import IDENT_ALPHABET, SPECIAL_STRINGS, corrupted, messages, strings

DEADLINE_S = 5.0

# Every status a unary call may end with, and why it can happen:
ALLOWED = {
    grpc.StatusCode.OK,  # a valid request
    grpc.StatusCode.INVALID_ARGUMENT,  # a bad field, or bytes that are not the request message
    grpc.StatusCode.NOT_FOUND,  # an unknown session id, or another API key's session
    grpc.StatusCode.FAILED_PRECONDITION,  # the session's state refuses it (ended, CREATED, ...)
    grpc.StatusCode.UNAUTHENTICATED,  # a missing, unknown or revoked API key
    grpc.StatusCode.ALREADY_EXISTS,  # NegotiateWebRtc: the USER seat is taken (no takeover)
    # A request over the 4 MiB receive limit (gRPC refuses it), or the WebRTC bridge's peer caps
    # (per session, per key) are reached.
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    # Transport only: the connection went away under the call (e.g. a GOAWAY while the server
    # stops); the client may retry. Never a handler's answer: the call-log check below would
    # flag one.
    grpc.StatusCode.UNAVAILABLE,
}

UNARY = [m for m in SERVICE.methods if not m.client_streaming and not m.server_streaming]
STREAMING = sorted(m.name for m in SERVICE.methods if m.client_streaming or m.server_streaming)
# Writable, immutable and output-only Session fields, for update_mask paths.
SESSION_PATHS = tuple(f.name for f in session_pb2.Session.DESCRIPTOR.fields)
# Fields a tame request always sets (the ones the RPCs require).
REQUIRED = ("session_id", "id", "agent_id", "session", "update_mask", "start_time", "end_time")
REQUIRED += ("sdp", "type", "role")


def test_every_rpc_is_fuzzed() -> None:
    """Only Interact is left to its own fuzzer; a new unary RPC is picked up by the tests below."""
    assert STREAMING == ["Interact"]
    assert len(UNARY) == len(SERVICE.methods) - 1


@dataclass
class World:
    """The live server and what the strategies draw from: sessions in every state, tokens, SDP."""

    live: LiveServer
    other_key: str = ""  # a second API key: the foreign session is its own
    slots: list[str] = field(default_factory=list)  # slot 0: a fresh session of each example
    page_tokens: list[str] = field(default_factory=list)
    sdp: str = ""

    def session_id(self, slot: int) -> str:
        return self.slots[slot % len(self.slots)]


async def _seed(w: World) -> None:
    m = w.live.running.server.manager
    assert m is not None
    key = await m.authenticate(w.live.api_key)
    other = await m.authenticate(w.other_key)

    async def new(k: Any = key, **kw: Any) -> str:
        spec = SessionSpec(agent_id=kw.pop("agent_id", "npc"), **kw)
        created = await m.create_session(k, spec, request_id="", api_key_plaintext="")
        return created.session.id

    external = await new(
        agent_mode=AgentMode.EXTERNAL, user_id="u1", metadata={"level": "3", "user_name": "Ada"}
    )
    builtin = await new(agent_id="brom")
    talked = await new(agent_mode=AgentMode.EXTERNAL)
    for i in range(5):
        role = MessageRole.USER if i % 2 == 0 else MessageRole.AGENT
        await m.append_message(talked, role, f"line {i}", f"i{i}")
    continued = await new(continue_from_session_id=talked)
    paused = await new(agent_mode=AgentMode.EXTERNAL)
    await m.apply(paused, SessionEvent.JOIN)
    await m.apply(paused, SessionEvent.LEAVE)
    active = await new(agent_mode=AgentMode.EXTERNAL)
    await m.apply(active, SessionEvent.JOIN)
    terminated = await new()
    await m.terminate_session(key, terminated)
    expired = await new()
    await m.apply(expired, SessionEvent.EXPIRE)
    foreign = await new(other)
    unknown = "sess_01ARZ3NDEKTSV4RRFFQ69G5FAV"
    w.slots = [
        external,  # replaced by a fresh session in every example
        external,
        builtin,
        talked,
        continued,
        paused,
        active,
        terminated,
        expired,
        foreign,
        unknown,
    ]
    # Real page tokens (bound to their filters), for ListSessions and ListMessages.
    sessions = await m.list_sessions(
        key, page_size=1, page_token="", state=None, agent_id="", user_id="", metadata={}
    )
    msgs = await m.list_messages(key, talked, page_size=1, page_token="")
    w.page_tokens = [sessions.next_page_token, msgs.next_page_token]


async def _offer() -> str:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    try:
        pc.createDataChannel("data")
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory: Path = tmp_path_factory.mktemp("unary-fuzz")
    # WebRTC peers that never connect leave after a second instead of twenty.
    with live_server(directory, webrtc_connect_timeout_ms=1_000) as live:
        w = World(live, other_key=live.on_server(live.running.new_key("fuzz-other")))
        live.on_server(_seed(w))
        w.sdp = live.run(_offer())
        yield w
        problems = database_problems(live.db_path)
        assert not problems, problems


# -- strategies ----------------------------------------------------------------------------------


def _mutate_sdp(sdp: str, ops: list[tuple[str, int, str]]) -> str:
    lines = sdp.split("\r\n")
    for op, where, text in ops:
        i = where % max(len(lines), 1)
        if op == "drop" and lines:
            del lines[i]
        elif op == "dup" and lines:
            lines.insert(i, lines[i])
        elif op == "value" and lines:
            head, _, _ = lines[i].partition(":")
            lines[i] = f"{head}:{text}"
        elif op == "insert":
            lines.insert(i, text)
        elif op == "newline":
            return "\n".join(lines)
    return "\r\n".join(lines)


def _sdp(w: World) -> st.SearchStrategy[str]:
    op = st.tuples(
        st.sampled_from(("drop", "dup", "value", "insert", "newline")),
        st.integers(0, 200),
        strings(),
    )
    return st.one_of(
        st.just(w.sdp),
        st.builds(_mutate_sdp, st.just(w.sdp), st.lists(op, min_size=1, max_size=4)),
    )


def _page_token(w: World) -> st.SearchStrategy[str]:
    def flip(token: str, i: int) -> str:
        if not token:
            return token
        i %= len(token)
        return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]

    return st.one_of(
        st.sampled_from(w.page_tokens),
        st.builds(flip, st.sampled_from(w.page_tokens), st.integers(0, 200)),
        st.builds(lambda t, n: t[:n], st.sampled_from(w.page_tokens), st.integers(0, 40)),
    )


def hints(w: World) -> dict[str, st.SearchStrategy[Any]]:
    """Domain values per field name, drawn as often as the generic ones."""
    session_id = st.integers(0, 50).map(w.session_id)
    return {
        "session_id": session_id,
        "id": session_id,
        "continue_from_session_id": session_id,
        "page_token": _page_token(w),
        "agent_id": st.sampled_from(("npc", "brom")),
        "user_id": st.sampled_from(("u1", "")),
        "request_id": st.sampled_from(("req-1", "req-2")),
        "key": st.one_of(
            st.sampled_from(("level", "user_name", "vip")),
            st.text(IDENT_ALPHABET, min_size=1, max_size=10),
        ),
        "value": st.sampled_from(("3", "Ada", "")),
        "sdp": _sdp(w),
        "type": st.sampled_from(("offer", "answer", "pranswer", "rollback", "OFFER")),
    }


def requests(w: World, method: _descriptor.MethodDescriptor) -> st.SearchStrategy[Any]:
    return messages(
        method.input_type,
        hints(w),
        known_paths=SESSION_PATHS,
        tame_paths=WRITABLE_FIELDS,
        required=REQUIRED,
    )


KEYS = ("valid",) * 6 + ("other", "missing", "junk")


def _metadata(w: World, which: str) -> tuple[tuple[str, str], ...]:
    if which == "missing":
        return ()
    key = {"valid": w.live.api_key, "other": w.other_key, "junk": "pk_" + "x" * 40}[which]
    return w.live.md(key)


# -- calls and checks ----------------------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    response: bytes | None
    status_details: bytes | None
    elapsed: float
    trailer_bytes: int = 0


async def call(w: World, method: _descriptor.MethodDescriptor, payload: bytes, md: Any) -> Outcome:
    """One unary call with raw bytes in and out (no serializer: what is sent is what we made)."""
    rpc = w.live.channel.unary_unary(f"{SERVICE_PATH}/{method.name}")
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        response = await rpc(payload, metadata=md, timeout=DEADLINE_S)
    except grpc.aio.AioRpcError as exc:
        return failed(exc, loop.time() - start)
    return Outcome(grpc.StatusCode.OK, "", response, None, loop.time() - start)


def failed(exc: grpc.aio.AioRpcError, elapsed: float) -> Outcome:
    status_details = None
    size = len((exc.details() or "").encode())
    for k, v in exc.trailing_metadata() or ():
        size += len(k) + len(v)
        if k == "grpc-status-details-bin":
            status_details = v
    return Outcome(exc.code(), exc.details() or "", None, status_details, elapsed, size)


# A client's default limit on the metadata it accepts (grpc.max_metadata_size): documented to hold
# every error whole (domain/limits.py, ERROR_DETAILS_MAX_BYTES).
CLIENT_METADATA_LIMIT = 8 * 1024


def check(w: World, method: _descriptor.MethodDescriptor, out: Outcome, what: str) -> None:
    said = f"{method.name} -> {out.code.name} {out.details[:300]!r} ({what})"
    event(out.code.name)  # `pytest --hypothesis-show-statistics` shows how far requests got
    assert out.code in ALLOWED, said
    assert "metadata size exceeds" not in out.details, f"{said}: the error did not reach the client"
    assert out.trailer_bytes <= CLIENT_METADATA_LIMIT, f"{said}: {out.trailer_bytes} bytes of error"
    assert out.elapsed < DEADLINE_S, f"{said}: took {out.elapsed:.2f}s"
    if out.response is not None:
        GetMessageClass(method.output_type).FromString(out.response)
    if out.status_details is not None:
        status = status_pb2.Status.FromString(out.status_details)
        assert status.code == out.code.value[0], f"{said}: details say code {status.code}"


def settle(w: World, out: Outcome, caplog: pytest.LogCaptureFixture) -> None:
    """After every example: the server's call log agrees with the client on the status, no ERROR
    record since the last check, the database consistent."""
    deadline = time.monotonic() + 2.0
    # The server logs its call just after it sent the status: wait for the line (bounded), unless
    # gRPC refused the request before any handler ran (over the receive limit).
    while not rpc_outcomes(caplog.records) and time.monotonic() < deadline:
        if out.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            break
        time.sleep(0.005)
    records = list(caplog.records)
    caplog.clear()
    served = rpc_outcomes(records)
    if out.code != grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert [code for _, code in served] == [out.code.name], (served, out.code, out.details)
    errors = error_records(records)
    assert not errors, errors
    problems = database_problems(w.live.db_path, quiescent=True)
    assert not problems, problems


def fresh_session(w: World, mode: AgentMode) -> None:
    """Slot 0 is a new session for each example, so there is always one to change or end."""
    m = w.live.running.server.manager
    assert m is not None

    async def make() -> str:
        key = await m.authenticate(w.live.api_key)
        spec = SessionSpec(agent_id="npc", agent_mode=mode, metadata={"level": "3"})
        created = await m.create_session(key, spec, request_id="", api_key_plaintext="")
        return created.session.id

    w.slots[0] = w.live.on_server(make())


# -- the fuzzers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", UNARY, ids=lambda m: m.name)
@fuzz_settings("unary")
@given(data=st.data())
def test_structured_requests(
    world: World,
    method: _descriptor.MethodDescriptor,
    caplog: pytest.LogCaptureFixture,
    data: st.DataObject,
) -> None:
    caplog.set_level(logging.INFO, logger="parleyd.rpc")
    fresh_session(world, data.draw(st.sampled_from(AgentMode), label="fresh session's mode"))
    request = data.draw(requests(world, method), label="request")
    which = data.draw(st.sampled_from(KEYS), label="api key")
    payload = request.SerializeToString()
    out = world.live.run(call(world, method, payload, _metadata(world, which)))
    check(world, method, out, f"{len(payload)} bytes, key {which}")
    settle(world, out, caplog)


@pytest.mark.parametrize("method", UNARY, ids=lambda m: m.name)
@fuzz_settings("unary_bytes")
@given(data=st.data())
def test_corrupted_encodings(
    world: World,
    method: _descriptor.MethodDescriptor,
    caplog: pytest.LogCaptureFixture,
    data: st.DataObject,
) -> None:
    caplog.set_level(logging.INFO, logger="parleyd.rpc")
    valid = requests(world, method)
    payload = data.draw(
        st.one_of(corrupted(valid, method.input_type), st.sampled_from(_RAW)), label="bytes"
    )
    out = world.live.run(call(world, method, payload, world.live.md()))
    check(world, method, out, f"bytes {payload[:64]!r}... ({len(payload)})")
    settle(world, out, caplog)


# Bytes that are no message at all, whatever the method.
_RAW = (
    b"",
    b"\x00",
    b"\xff" * 16,
    b"\x0a",
    b"\x0a\xff\xff\xff\xff\x0f",
    b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
    *(s.encode() for s in SPECIAL_STRINGS if s),
)
