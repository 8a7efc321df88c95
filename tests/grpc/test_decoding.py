"""Bytes that are not the request, and the receive limits, over the real in-process server.

Every unary RPC of SessionService (taken from the service descriptor, so a new RPC is covered
without touching this file) answers undecodable bytes INVALID_ARGUMENT before its servicer runs;
an Interact stream ends with INVALID_ARGUMENT and its participant leaves the room as on any
disconnect. The log gets one rate-limited WARNING line for it at most, never an ERROR. Then the
limits: frames per second on one Interact stream, the message size, the text length.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2, session_service_pb2

import parleyd.grpc.interact as interact_module
from parleyd.domain import limits
from parleyd.grpc import _decode
from parleyd.grpc.interact import FrameBudget
from tests.grpc import bad_fields, db_snapshot, rpc_error, status_details
from tests.support.interact import Peer, has, is_event, join
from tests.support.server import Running, serving
from tests.support.sessions import create_session, get_session, wait_state
from tests.support.waiting import wait_until

USER, AGENT, OBSERVER = ip.ROLE_USER, ip.ROLE_AGENT, ip.ROLE_OBSERVER
E = ip.EventType
SERVICE = session_service_pb2.DESCRIPTOR.services_by_name["SessionService"]
INTERACT = f"/{SERVICE.full_name}/Interact"
UNARY = {m.name: m for m in SERVICE.methods if not (m.client_streaming or m.server_streaming)}
DECODE_LOGGER = "parleyd.grpc.decode"
PAUSED = session_pb2.SESSION_STATE_PAUSED
ACTIVE = session_pb2.SESSION_STATE_ACTIVE
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


@pytest.fixture
async def live(sqlite_url: str) -> AsyncIterator[Running]:
    async with serving(sqlite_url, pause_grace_ms=50) as r:
        yield r


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every WARNING and above, of every logger (grpc's own included)."""
    caplog.set_level(logging.WARNING)
    return caplog


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [f"{r.name}: {r.getMessage()}" for r in errors]


def decode_warnings(caplog: pytest.LogCaptureFixture, method: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == DECODE_LOGGER and getattr(r, "rpc_method", None) == method
    ]


# -- building bytes by hand --------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def bad_utf8(message: Descriptor, depth: int = 0) -> bytes | None:
    """A message of this type whose first string field (maybe nested) holds b"\\xff\\xfe"."""
    for f in message.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            return length_delimited(f.number, b"\xff\xfe")
    if depth < 3:
        for f in message.fields:
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                inner = bad_utf8(f.message_type, depth + 1)
                if inner is not None:
                    return length_delimited(f.number, inner)
    return None


GARBAGE: dict[str, Callable[[Descriptor], bytes | None]] = {
    "truncated": lambda t: b"\x0a\x05\x12",  # field 1 claims 5 bytes, 1 follows
    "bad-wire-type": lambda t: b"\x0f\x01",  # wire type 7 does not exist
    "unterminated-varint": lambda t: b"\x08" + b"\xff" * 11,
    "bad-utf8": bad_utf8,
}


def assert_undecodable(err: grpc.aio.AioRpcError, type_name: str, payload: str) -> None:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    details = err.details() or ""
    assert details.startswith(f"request is not a valid {type_name}: "), details
    if payload == "bad-utf8":
        assert "UTF-8" in details
    assert bad_fields(err) == ["request"]
    status = status_details(err)
    assert status is not None
    infos = []
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            infos.append((info.reason, info.domain))
    assert infos == [("INVALID_ARGUMENT", "parley.dev")]


# -- unary RPCs --------------------------------------------------------------------------------


def test_every_unary_request_has_a_string_field_to_spoil() -> None:
    assert UNARY, "SessionService has no unary RPC?"
    for name, method in UNARY.items():
        assert bad_utf8(method.input_type) is not None, name


@pytest.mark.parametrize("name", sorted(UNARY))
async def test_undecodable_unary_request_is_invalid_argument_and_logged_once(
    live: Running, logged: pytest.LogCaptureFixture, name: str
) -> None:
    method = UNARY[name]
    path = f"/{SERVICE.full_name}/{name}"
    sid, _ = await create_session(live)
    before = await db_snapshot(live, [live.key_id])
    raw = live.channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    for payload, build in GARBAGE.items():
        data = build(method.input_type)
        assert data is not None
        for _ in range(3):  # repeated: still one WARNING line for the method
            err = await rpc_error(raw(data, metadata=live.md()))
            assert_undecodable(err, method.input_type.full_name, payload)
        # Authentication still comes first: a caller without a key learns nothing else.
        unauthenticated = await rpc_error(raw(data))
        assert unauthenticated.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await db_snapshot(live, [live.key_id]) == before
    # The server still serves, this method included.
    assert (await get_session(live, sid)).id == sid
    no_errors_logged(logged)
    lines = decode_warnings(logged, path)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING
    assert lines[0].exc_info is None
    assert lines[0].suppressed == 0  # type: ignore[attr-defined]


async def test_health_check_answers_undecodable_bytes_too(
    live: Running, logged: pytest.LogCaptureFixture
) -> None:
    raw = live.channel.unary_unary(
        "/grpc.health.v1.Health/Check", request_serializer=None, response_deserializer=None
    )
    err = await rpc_error(raw(b"\x0a\x02\xff\xfe"))
    assert_undecodable(err, "grpc.health.v1.HealthCheckRequest", "bad-utf8")
    stub = health_pb2_grpc.HealthStub(live.channel)
    ok = await stub.Check(health_pb2.HealthCheckRequest())
    assert ok.status == health_pb2.HealthCheckResponse.SERVING
    no_errors_logged(logged)


async def test_reflection_stream_answers_undecodable_bytes_too(
    live: Running, logged: pytest.LogCaptureFixture
) -> None:
    call = live.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=None,
        response_deserializer=None,
    )()
    await call.write(b"\x0f\x01")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(call.read(), 5)
    assert_undecodable(info.value, "grpc.reflection.v1alpha.ServerReflectionRequest", "garbage")
    no_errors_logged(logged)


def test_rate_limited_warning_counts_what_it_suppressed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    monkeypatch.setattr(_decode.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.WARNING, logger="parleyd.test")
    warn = _decode.RateLimitedLog(logging.getLogger("parleyd.test"), interval_s=10)
    written = [warn.warning("a", "x %s", n) for n in range(5)]
    written.append(warn.warning("b", "other key"))
    now[0] += 10
    written.append(warn.warning("a", "again"))
    assert written == [True, False, False, False, False, True, True]
    assert [(r.getMessage(), r.suppressed) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("x 0", 0),
        ("other key", 0),
        ("again", 4),
    ]


# -- Interact: undecodable frames ---------------------------------------------------------------


def raw_peer(r: Running) -> Peer:
    """An Interact stream that sends bytes as they are (and reads InteractResponses)."""
    call = r.channel.stream_stream(
        INTERACT, request_serializer=None, response_deserializer=ip.InteractResponse.FromString
    )()
    return Peer(call, USER)


async def raw_user(r: Running, sid: str, tok: str) -> Peer:
    peer = raw_peer(r)
    join_msg = ip.InteractRequest(join=ip.Join(session_id=sid, access_token=tok, role=USER))
    await peer.call.write(join_msg.SerializeToString())
    peer.opened = (await peer.until(has("opened"))).opened
    return peer


async def ended_with(peer: Peer, timeout: float = 5.0) -> grpc.aio.AioRpcError:
    """The status the stream ends with: fails when it ends OK or nothing comes for `timeout`."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await peer.drain_to_end(timeout)
    return info.value


def left_events(peer: Peer, participant_id: str) -> list[ip.InteractResponse]:
    return [
        m
        for m in peer.seen
        if is_event(E.EVENT_TYPE_PARTICIPANT_LEFT)(m)
        and m.event.participant.participant_id == participant_id
    ]


async def assert_metering_stopped(r: Running, sid: str, watcher: Peer) -> None:
    """PAUSED, and its duration stays put while the watcher reads for a moment."""
    paused = await wait_state(r, sid, PAUSED)
    await watcher.read_for(0.3)  # a window to measure in, not a wait for ordering
    again = await get_session(r, sid)
    assert again.state == PAUSED
    assert again.duration.ToMilliseconds() == paused.duration.ToMilliseconds()
    assert paused.duration.ToMilliseconds() > 0


@pytest.mark.parametrize(
    "payload",
    [
        "truncated",
        "bad-wire-type",
        "bad-utf8",  # a join whose session_id is not UTF-8
    ],
)
async def test_undecodable_first_message_is_invalid_argument(
    live: Running, logged: pytest.LogCaptureFixture, payload: str
) -> None:
    sid, _ = await create_session(live)
    peer = raw_peer(live)
    data = GARBAGE[payload](ip.InteractRequest.DESCRIPTOR)
    assert data is not None
    await peer.call.write(data)
    err = await ended_with(peer)
    assert_undecodable(err, "parley.v1.InteractRequest", payload)
    assert (await get_session(live, sid)).state == session_pb2.SESSION_STATE_CREATED
    no_errors_logged(logged)
    assert len(decode_warnings(logged, INTERACT)) == 1


@pytest.mark.parametrize("payload", ["truncated", "bad-utf8"])
async def test_undecodable_frame_after_join_ends_the_stream_and_the_user_leaves(
    live: Running, logged: pytest.LogCaptureFixture, payload: str
) -> None:
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT)
    user = await raw_user(live, sid, tok)
    observer = await join(live, sid, tok, OBSERVER)
    assert (await get_session(live, sid)).state == ACTIVE
    spoiled = GARBAGE[payload](ip.InteractRequest.DESCRIPTOR)
    if payload == "bad-utf8":  # a text frame whose text is not UTF-8 (field 3, then field 1)
        spoiled = length_delimited(3, length_delimited(1, b"\xff\xfe"))
    assert spoiled is not None
    await user.call.write(spoiled)

    err = await ended_with(user)
    assert_undecodable(err, "parley.v1.InteractRequest", payload)
    assert user.opened is not None
    left = await observer.until(is_event(E.EVENT_TYPE_PARTICIPANT_LEFT))
    assert left.event.participant.participant_id == user.opened.participant_id
    await agent.until(is_event(E.EVENT_TYPE_SESSION_PAUSED))
    await assert_metering_stopped(live, sid, observer)
    no_errors_logged(logged)
    assert len(decode_warnings(logged, INTERACT)) == 1


async def test_reader_failing_for_a_bug_ends_the_stream_internal_logged_once(
    live: Running, logged: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid, tok = await create_session(live)
    await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER)
    observer = await join(live, sid, tok, OBSERVER)

    def broken(request: ip.InteractRequest) -> object:
        raise RuntimeError("a bug in the converter")

    monkeypatch.setattr(interact_module, "in_frame", broken)
    await user.send(text=ip.TextInput(text="hello"))
    err = await ended_with(user)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error; see the server log"
    assert user.opened is not None
    await observer.until(is_event(E.EVENT_TYPE_PARTICIPANT_LEFT))
    await wait_state(live, sid, PAUSED)
    errors = [r for r in logged.records if r.levelno >= logging.ERROR]
    assert [(r.name, r.exc_info is not None) for r in errors] == [("parleyd.interact", True)]
    assert "a bug in the converter" in errors[0].getMessage()


# -- Interact: the frame budget ----------------------------------------------------------------


def chunk(n: int) -> bytes:
    """20 ms at 16 kHz, every sample holding n."""
    return struct.pack("<320h", *([n % 30000] * 320))


async def pair(r: Running) -> tuple[str, Peer, Peer]:
    sid, tok = await create_session(r)
    agent = await join(r, sid, tok, AGENT)
    user = await join(r, sid, tok, USER)
    return sid, agent, user


def exhausted(m: ip.InteractResponse) -> bool:
    return has("error")(m) and m.error.code == RESOURCE_EXHAUSTED


async def test_a_burst_over_the_frame_budget_is_dropped_and_reported_and_the_stream_goes_on(
    live: Running, logged: pytest.LogCaptureFixture
) -> None:
    sid_a, agent_a, user_a = await pair(live)
    _, agent_b, user_b = await pair(live)
    burst = 600

    async def flood() -> None:
        for n in range(burst):
            await user_a.send(audio=ip.AudioInput(pcm=chunk(n), sequence=n))

    async def meanwhile() -> None:  # another session's user at its own pace
        for n in range(20):
            await user_b.send(audio=ip.AudioInput(pcm=chunk(n), sequence=n))

    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(flood(), meanwhile())
    error = await user_a.until(exhausted)
    assert f"at most {limits.INTERACT_FRAMES_PER_SECOND_MAX} frames per second" in (
        error.error.message
    )
    assert f"burst {limits.INTERACT_FRAMES_BURST}" in error.error.message
    assert error.error.message.endswith("1 frame dropped since the last such error")

    # The stream goes on: once the budget refills, a frame reaches the agent again.
    after = iter(range(10_000, 10_500))

    async def relayed() -> bool:
        await user_a.send(audio=ip.AudioInput(pcm=chunk(1), sequence=next(after)))
        await agent_a.read_for(0.05)
        return any(has("audio")(m) and m.audio.source_sequence >= 10_000 for m in agent_a.seen)

    await wait_until(relayed, timeout_s=5, what="a frame after the burst reaching the agent")
    # What the agent got of the burst (or was told it lost): the burst allowance at least, and
    # clearly less than everything.
    got = {m.audio.source_sequence for m in agent_a.seen if has("audio")(m)} & set(range(burst))
    lost = sum(m.event.count for m in agent_a.seen if is_event(E.EVENT_TYPE_FRAMES_DROPPED)(m))
    assert limits.INTERACT_FRAMES_BURST <= len(got) + lost < burst
    # At most one budget error per second went out, not one per dropped frame.
    await user_a.read_for(0.1)  # what is still on its way
    errors = [m for m in user_a.seen if exhausted(m)]
    assert 1 <= len(errors) <= 1 + (loop.time() - start)
    assert (await get_session(live, sid_a)).state == ACTIVE

    # The other session saw nothing of it.
    got_b = [await agent_b.until(has("audio")) for _ in range(20)]
    assert [m.audio.source_sequence for m in got_b] == list(range(20))
    assert not [m for m in user_b.seen if has("error")(m)]
    no_errors_logged(logged)


async def test_agent_streams_are_not_held_to_the_budget(live: Running) -> None:
    _, agent, user = await pair(live)
    await agent.send(reply_start=ip.ReplyStart(interaction_id="int_fast"))
    sent = 600
    for n in range(sent):
        await agent.send(reply_audio=ip.ReplyAudio(pcm=chunk(n), interaction_id="int_fast"))
    await agent.send(reply_end=ip.ReplyEnd(interaction_id="int_fast"))
    await user.until(is_event(E.EVENT_TYPE_RESPONSE_DONE), timeout=10)
    got = sum(1 for m in user.seen if has("audio")(m))
    lost = sum(m.event.count for m in user.seen if is_event(E.EVENT_TYPE_FRAMES_DROPPED)(m))
    assert got + lost == sent
    assert not [m for m in agent.seen if exhausted(m)]


async def test_persistent_flooding_ends_the_stream_resource_exhausted(
    live: Running, logged: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real threshold takes thousands of frames; the rule is the same with a small one: 40
    # frames of slack, refilled at 1 per second, so the 41st frame of a quick burst ends it.
    monkeypatch.setattr(FrameBudget, "FLOOD_RATE", 1)
    monkeypatch.setattr(FrameBudget, "FLOOD_SLACK", 40)
    sid, tok = await create_session(live)
    await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER)
    observer = await join(live, sid, tok, OBSERVER)
    # The last frame sent is the one that ends the stream: a client still writing when the status
    # arrives would see its write fail first (grpcio then reports INTERNAL "Internal error from
    # Core" on the client side).
    for n in range(41):
        await user.send(audio=ip.AudioInput(pcm=chunk(n), sequence=n))
    err = await ended_with(user)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "frames per second" in (err.details() or "")
    assert user.opened is not None
    left = await observer.until(is_event(E.EVENT_TYPE_PARTICIPANT_LEFT))
    assert left.event.participant.participant_id == user.opened.participant_id
    await wait_state(live, sid, PAUSED)
    no_errors_logged(logged)
    warned = [r for r in logged.records if r.name == "parleyd.interact"]
    assert [r.levelno for r in warned] == [logging.WARNING]


def test_frame_budget_rules() -> None:
    rate, burst = FrameBudget.RATE, FrameBudget.BURST
    b = FrameBudget(0.0)
    assert all(b.take(0.0) for _ in range(burst))
    assert not b.take(0.0)
    first = b.report(0.0)
    assert first is not None
    assert first.message.endswith("1 frame dropped since the last such error")
    assert not b.take(0.0)
    assert b.report(0.0) is None  # at most one report per second
    assert b.take(1.0 / rate)  # one frame's worth of refill
    assert not b.take(1.0 / rate)
    later = b.report(1.0)
    assert later is not None
    assert "2 frames dropped" in later.message

    # Steadily at the rate: nothing dropped, for a minute.
    b = FrameBudget(0.0)
    assert all(b.take(n / rate) for n in range(60 * rate))

    # Flooding: nine times the rate for 10 s is dropped but tolerated ...
    b = FrameBudget(0.0)
    step = 1.0 / (9 * rate)
    for n in range(10 * 9 * rate):
        b.take(n * step)
    # ... twenty times the rate ends the stream after about 2 s; an AGENT's stream too.
    for limited in (True, False):
        b = FrameBudget(0.0, limited=limited)
        step = 1.0 / (20 * rate)
        assert 1.9 <= frames_until_cut(b, step) * step <= 2.1


def frames_until_cut(b: FrameBudget, step: float) -> int:
    """How many frames, one every `step` seconds, the budget takes before it ends the stream."""
    for n in range(1_000_000):
        try:
            b.take(n * step)
        except interact_module.ResourceExhausted:
            return n
    raise AssertionError("never cut")


# -- Interact: text length, message size -------------------------------------------------------


async def test_text_at_the_limit_is_relayed_and_one_more_character_is_refused(
    live: Running,
) -> None:
    sid, agent, user = await pair(live)
    at_limit = "é" * limits.TEXT_MAX_CHARS  # characters, not bytes: 2 bytes each in UTF-8
    await user.send(text=ip.TextInput(text=at_limit))
    got = await agent.until(has("text"))
    assert got.text.text == at_limit
    await user.send(text=ip.TextInput(text=at_limit + "é"))
    err = await user.until(has("error"))
    assert (err.error.code, err.error.field) == (INVALID_ARGUMENT, "text.text")
    assert str(limits.TEXT_MAX_CHARS) in err.error.message
    assert [m for m in agent.seen if has("text")(m)] == [got]
    assert (await get_session(live, sid)).state == ACTIVE


async def test_message_over_the_size_limit_is_resource_exhausted_from_grpc(
    live: Running, logged: pytest.LogCaptureFixture
) -> None:
    path = f"/{SERVICE.full_name}/GetSession"
    raw = live.channel.unary_unary(path, request_serializer=None, response_deserializer=None)

    def get_request(total: int) -> bytes:
        # field 1 (session_id), a 4-byte length, then filler: `total` bytes in all
        body = b"a" * (total - 5)
        data = b"\x0a" + varint(len(body)) + body
        assert len(data) == total
        return data

    at_limit = await rpc_error(raw(get_request(limits.MESSAGE_MAX_BYTES), metadata=live.md()))
    assert at_limit.code() == grpc.StatusCode.INVALID_ARGUMENT  # through gRPC, to the servicer
    over = await rpc_error(raw(get_request(limits.MESSAGE_MAX_BYTES + 1), metadata=live.md()))
    assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"vs. {limits.MESSAGE_MAX_BYTES}" in (over.details() or ""), over.details()

    # On Interact the stream ends with it, and the participant leaves as on any disconnect.
    sid, tok = await create_session(live)
    await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER)
    observer = await join(live, sid, tok, OBSERVER)
    await user.send(text=ip.TextInput(text="x" * limits.MESSAGE_MAX_BYTES))
    err = await ended_with(user)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (err.details() or "")
    assert user.opened is not None
    left = await observer.until(is_event(E.EVENT_TYPE_PARTICIPANT_LEFT))
    assert left.event.participant.participant_id == user.opened.participant_id
    await assert_metering_stopped(live, sid, observer)
    no_errors_logged(logged)


async def test_an_operator_can_raise_the_frame_budget(sqlite_url: str) -> None:
    # --interact-max-frames-per-second 2000: the same 600-frame burst is now within budget.
    async with serving(sqlite_url, interact_max_frames_per_second=2_000) as r:
        _, agent, user = await pair(r)
        for n in range(600):
            await user.send(audio=ip.AudioInput(pcm=chunk(n), sequence=n))
        await user.send(text=ip.TextInput(text="done"))
        await agent.until(lambda m: has("text")(m) and m.text.text == "done")
        got = {m.audio.source_sequence for m in agent.seen if has("audio")(m)}
        lost = sum(m.event.count for m in agent.seen if is_event(E.EVENT_TYPE_FRAMES_DROPPED)(m))
        assert len(got) + lost == 600
        assert [m for m in await user.read_for(0.1) if exhausted(m)] == []
