"""Interact refuses bad input with its documented status or a StreamError; nothing else moves."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import grpc
import pytest
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2, session_service_pb2

from tests.support.interact import Peer, has, is_event, join
from tests.support.server import Running, serving
from tests.support.sessions import create_session, messages, terminate

USER, AGENT = ip.ROLE_USER, ip.ROLE_AGENT


@pytest.fixture
async def live(sqlite_url: str) -> AsyncIterator[Running]:
    async with serving(sqlite_url, pause_grace_ms=50, outbox_capacity=32) as r:
        yield r


async def fatal(r: Running, *requests: ip.InteractRequest) -> grpc.aio.AioRpcError:
    call = r.stub.Interact()
    for req in requests:
        await call.write(req)

    async def read_all() -> None:
        while await asyncio.wait_for(call.read(), 5) is not grpc.aio.EOF:
            pass

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await read_all()
    return err.value


def join_req(sid: str, tok: str, role: int = USER, **kw: object) -> ip.InteractRequest:
    return ip.InteractRequest(
        join=ip.Join(session_id=sid, access_token=tok, role=role, **kw)  # type: ignore[arg-type]
    )


async def test_payload_before_join(live: Running) -> None:
    err = await fatal(live, ip.InteractRequest(text=ip.TextInput(text="hi")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "join" in (err.details() or "")


async def test_stream_closed_before_join(live: Running) -> None:
    call = live.stub.Interact()
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(call.read(), 5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("mutate", "code", "needle"),
    [
        (lambda sid, tok: join_req(sid, "pat_wrong"), grpc.StatusCode.UNAUTHENTICATED, "token"),
        (lambda sid, tok: join_req(sid, ""), grpc.StatusCode.UNAUTHENTICATED, "token"),
        (
            lambda sid, tok: join_req("sess_nope", tok),
            grpc.StatusCode.INVALID_ARGUMENT,
            "session_id",
        ),
        (lambda sid, tok: join_req(sid, tok, role=0), grpc.StatusCode.INVALID_ARGUMENT, "role"),
        (
            lambda sid, tok: join_req(sid, tok, audio_format=ip.AudioFormat(sample_rate=96_000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "sample_rate",
        ),
        (
            lambda sid, tok: join_req(sid, tok, audio_format=ip.AudioFormat(sample_rate=4_000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "sample_rate",
        ),
        (
            lambda sid, tok: join_req(sid, tok, audio_format=ip.AudioFormat(chunk_ms=500)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "chunk_ms",
        ),
    ],
)
async def test_bad_join_is_fatal_with_its_status(live: Running, mutate, code, needle) -> None:  # type: ignore[no-untyped-def]
    sid, tok = await create_session(live)
    err = await fatal(live, mutate(sid, tok))
    assert err.code() == code
    assert needle in (err.details() or "")
    s = await live.stub.GetSession(
        session_service_pb2.GetSessionRequest(session_id=sid), metadata=live.md()
    )
    assert s.session.state == session_pb2.SESSION_STATE_CREATED


async def test_foreign_token_is_unauthenticated(live: Running) -> None:
    sid_a, _ = await create_session(live)
    _, tok_b = await create_session(live)
    err = await fatal(live, join_req(sid_a, tok_b))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_ended_session_is_failed_precondition(live: Running) -> None:
    sid, tok = await create_session(live)
    await terminate(live, sid)
    err = await fatal(live, join_req(sid, tok))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_agent_on_builtin_session_is_refused(live: Running) -> None:
    sid, tok = await create_session(live, external=False)
    err = await fatal(live, join_req(sid, tok, role=AGENT))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


async def pair(live: Running) -> tuple[str, Peer, Peer]:
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER, chunk_ms=20)
    return sid, agent, user


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (ip.InteractRequest(audio=ip.AudioInput(pcm=b"\x00" * 641)), "audio.pcm"),  # odd length
        (ip.InteractRequest(audio=ip.AudioInput(pcm=b"\x00" * 642)), "audio.pcm"),  # > 20 ms
        (ip.InteractRequest(audio=ip.AudioInput(pcm=b"\x00" * 32_002)), "audio.pcm"),  # > 1 s
        (ip.InteractRequest(text=ip.TextInput(text="x" * 4_097)), "text.text"),
        (ip.InteractRequest(text=ip.TextInput(text="   ")), "text.text"),
        (ip.InteractRequest(trigger=ip.Trigger(name="Bad Name!")), "trigger.name"),
        (ip.InteractRequest(trigger=ip.Trigger(name="")), "trigger.name"),
        (ip.InteractRequest(reply_start=ip.ReplyStart()), ""),  # AGENT-only payload from a USER
        (ip.InteractRequest(), ""),  # empty message
        (ip.InteractRequest(join=ip.Join()), ""),  # second join
    ],
)
async def test_recoverable_mistakes_answer_an_error_and_the_stream_goes_on(
    live: Running, request_: ip.InteractRequest, field: str
) -> None:
    sid, agent, user = await pair(live)
    await user.send(
        **{request_.WhichOneof("payload"): getattr(request_, request_.WhichOneof("payload"))}
        if request_.WhichOneof("payload")
        else {}
    )
    err = await user.until(has("error"))
    assert err.error.field == field
    assert err.error.message
    # Nothing of it reached the agent or the history; the stream still works.
    good = struct.pack("<320h", *([7] * 320))
    await user.send(audio=ip.AudioInput(pcm=good, sequence=1))
    got = await agent.until(has("audio"))
    assert got.audio.pcm == good
    assert [k for k in agent.kinds() if k in ("text", "trigger")] == []
    assert await messages(live, sid) == []


async def test_oversized_trigger_payload(live: Running) -> None:
    _, _agent, user = await pair(live)
    trig = ip.Trigger(name="big")
    trig.payload.update({"blob": "x" * 5000})
    await user.send(trigger=trig)
    err = await user.until(has("error"))
    assert err.error.field == "trigger.payload"


async def test_another_sessions_traffic_is_not_affected(live: Running) -> None:
    _, _agent_a, user_a = await pair(live)
    _, agent_b, user_b = await pair(live)
    await user_a.send(audio=ip.AudioInput(pcm=b"\x00" * 3))
    await user_a.until(has("error"))
    user_a.call.cancel()
    chunk = struct.pack("<320h", *range(320))
    for n in range(20):
        await user_b.send(audio=ip.AudioInput(pcm=chunk, sequence=n))
    got = [await agent_b.until(has("audio")) for _ in range(20)]
    assert [m.audio.source_sequence for m in got] == list(range(20))
    assert agent_b.kinds().count("EVENT_TYPE_SESSION_PAUSED") == 0


async def test_slow_reader_loses_its_own_oldest_audio_and_is_told(live: Running) -> None:
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT)
    # A client that will not read for a while, on its own channel with a fixed 64 KiB HTTP/2
    # window (no BDP auto-tuning), so transport buffers cannot hide how far behind it is.
    slow_channel = grpc.aio.insecure_channel(live.target, options=[("grpc.http2.bdp_probe", 0)])
    user = Peer(
        slow_channel.stream_stream(
            "/parley.v1.SessionService/Interact",
            request_serializer=ip.InteractRequest.SerializeToString,
            response_deserializer=ip.InteractResponse.FromString,
        )(),
        USER,
    )
    await user.send(join=ip.Join(session_id=sid, access_token=tok, role=USER))
    await user.until(has("opened"))
    obs = await join(live, sid, tok, ip.ROLE_OBSERVER)
    chunk = struct.pack("<320h", *([1000] * 320))
    sent = 3000  # ~2 MB: far more than the transport and the outbox (32 frames) can hold
    for n in range(sent):
        await agent.send(reply_audio=ip.ReplyAudio(pcm=chunk, interaction_id="int_flood"))
        if n % 500 == 0:
            await asyncio.sleep(0)
    # The observer reads and gets everything (or reports its own drops): the room did not stall.
    await agent.send(reply_end=ip.ReplyEnd(interaction_id="int_flood"))
    await obs.until(is_event(ip.EVENT_TYPE_RESPONSE_DONE), timeout=20)
    # Now the slow user reads: it was told how many frames it lost, and lost fewer than sent.
    dropped = await user.until(is_event(ip.EVENT_TYPE_FRAMES_DROPPED), timeout=10)
    assert 0 < dropped.event.count < sent
    done = await user.until(is_event(ip.EVENT_TYPE_RESPONSE_DONE), timeout=10)
    assert done.event.interaction_id == "int_flood"
    got_audio = sum(1 for m in user.seen if has("audio")(m))
    total_dropped = sum(
        m.event.count for m in user.seen if is_event(ip.EVENT_TYPE_FRAMES_DROPPED)(m)
    )
    assert got_audio + total_dropped == sent
    await slow_channel.close()
