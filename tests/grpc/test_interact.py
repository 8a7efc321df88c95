"""Interact over a real in-process server: two or three real gRPC clients per session."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2

from tests.support.interact import has, is_event, join
from tests.support.server import Running, serving
from tests.support.sessions import (
    create_session,
    disconnect,
    get_session,
    messages,
    terminate,
    wait_state,
)

USER, AGENT, OBSERVER = ip.ROLE_USER, ip.ROLE_AGENT, ip.ROLE_OBSERVER
E = ip.EventType
PAUSE_GRACE_S = 0.05


@pytest.fixture
async def live(database_url: str) -> AsyncIterator[Running]:
    async with serving(
        database_url,
        pause_grace_ms=round(PAUSE_GRACE_S * 1000),
        agent_wait_timeout_ms=1_500,
        heartbeat_interval_ms=200,
    ) as r:
        yield r


def pcm_chunk(n: int, samples: int = 320) -> bytes:
    """A recognisable 20 ms chunk at 16 kHz: every sample holds the chunk number."""
    return struct.pack(f"<{samples}h", *([n % 30000] * samples))


async def test_user_and_agent_exchange_audio_and_text_in_order(live: Running) -> None:
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT)
    assert agent.opened is not None
    assert agent.opened.role == AGENT
    user = await join(live, sid, tok, USER)
    assert user.opened is not None
    assert user.opened.session.state == session_pb2.SESSION_STATE_ACTIVE
    assert [p.role for p in user.opened.participants] == [AGENT]
    joined = await agent.until(is_event(E.EVENT_TYPE_PARTICIPANT_JOINED))
    assert joined.event.participant.participant_id == user.opened.participant_id

    chunks = [pcm_chunk(i) for i in range(25)]
    for i, c in enumerate(chunks):
        await user.send(audio=ip.AudioInput(pcm=c, sequence=i))
    got = [await agent.until(has("audio")) for _ in chunks]
    assert [m.audio.pcm for m in got] == chunks  # byte-exact, in order
    assert [m.audio.source_sequence for m in got] == list(range(25))
    assert {m.audio.from_participant_id for m in got} == {user.opened.participant_id}

    await user.send(text=ip.TextInput(text="where is the blacksmith?"))
    t = await agent.until(has("text"))
    assert t.text.text == "where is the blacksmith?"
    assert t.text.from_role == USER

    # The agent's reply lifecycle: start, audio, text deltas, visemes, end.
    await agent.send(reply_start=ip.ReplyStart(interaction_id="int_reply1"))
    reply_chunks = [pcm_chunk(100 + i) for i in range(5)]
    await agent.send(reply_text=ip.ReplyText(text="Down the road, ", interaction_id="int_reply1"))
    for c in reply_chunks:
        await agent.send(reply_audio=ip.ReplyAudio(pcm=c))
    await agent.send(reply_text=ip.ReplyText(text="past the well."))
    await agent.send(
        reply_visemes=ip.ReplyVisemes(
            visemes=[ip.Viseme(id="aa", offset_ms=0), ip.Viseme(id="oh", offset_ms=60)]
        )
    )
    await agent.send(reply_end=ip.ReplyEnd())

    started = await user.until(is_event(E.EVENT_TYPE_RESPONSE_STARTED))
    assert started.event.interaction_id == "int_reply1"
    audio = [await user.until(has("audio")) for _ in reply_chunks]
    assert [m.audio.pcm for m in audio] == reply_chunks
    assert [m.audio.offset_ms for m in audio] == [0, 20, 40, 60, 80]
    assert {m.audio.interaction_id for m in audio} == {"int_reply1"}
    delta = await user.until(has("text"))
    assert (delta.text.text, delta.text.is_final, delta.text.offset_ms) == (
        "past the well.",
        False,
        100,
    )
    vis = await user.until(has("visemes"))
    assert [v.id for v in vis.visemes.visemes] == ["aa", "oh"]
    final = await user.until(lambda m: has("text")(m) and m.text.is_final)
    assert final.text.text == "Down the road, past the well."
    await user.until(is_event(E.EVENT_TYPE_RESPONSE_DONE))
    # Sequence numbers on a stream have no gaps.
    assert [m.sequence for m in user.seen] == list(range(1, len(user.seen) + 1))

    history = await messages(live, sid)
    assert [(m.role, m.text) for m in history] == [
        (1, "where is the blacksmith?"),
        (2, "Down the road, past the well."),
    ]
    assert history[1].interaction_id == "int_reply1"


async def test_observer_sees_both_sides(live: Running) -> None:
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER)
    obs = await join(live, sid, tok, OBSERVER)
    assert {p.role for p in obs.opened.participants} == {AGENT, USER}  # type: ignore[union-attr]
    await user.send(text=ip.TextInput(text="hello"))
    await agent.until(has("text"))
    await agent.send(text=ip.TextInput(text="greetings"))
    user_text = await obs.until(lambda m: has("text")(m) and m.text.from_role == USER)
    agent_text = await obs.until(lambda m: has("text")(m) and m.text.from_role == AGENT)
    assert (user_text.text.text, agent_text.text.text) == ("hello", "greetings")
    await obs.send(text=ip.TextInput(text="I only watch"))
    err = await obs.until(has("error"))
    assert err.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]


async def test_resampling_between_rates(live: Running) -> None:
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT, rate=16_000)
    user = await join(live, sid, tok, USER, rate=48_000)
    await user.send(audio=ip.AudioInput(pcm=b"\x10\x00" * 960))  # 20 ms at 48 kHz
    got = await agent.until(has("audio"))
    assert got.audio.sample_rate == 16_000
    assert abs(len(got.audio.pcm) - 640) <= 4  # 20 ms at 16 kHz


async def test_pause_on_cancel_and_resume_with_history(live: Running) -> None:
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER)
    await user.send(text=ip.TextInput(text="remember me"))
    await agent.until(has("text"))
    user.call.cancel()
    s = await wait_state(live, sid, session_pb2.SESSION_STATE_PAUSED, timeout_s=1.0)
    assert s.duration.ToMilliseconds() > 0
    paused = await agent.until(is_event(E.EVENT_TYPE_SESSION_PAUSED))
    assert paused.event.type == E.EVENT_TYPE_SESSION_PAUSED
    again = await join(live, sid, tok, USER)
    assert again.opened.session.state == session_pb2.SESSION_STATE_ACTIVE  # type: ignore[union-attr]
    assert [m.text for m in await messages(live, sid)] == ["remember me"]


async def test_disconnect_session_closes_user_stream(live: Running) -> None:
    sid, tok = await create_session(live)
    await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER)
    await disconnect(live, sid)
    await user.until(is_event(E.EVENT_TYPE_SESSION_PAUSED))
    assert await user.read() is None
    assert await user.call.code() == grpc.StatusCode.OK
    assert (await get_session(live, sid)).state == session_pb2.SESSION_STATE_PAUSED


async def test_second_user_refused_and_takeover_replaces(live: Running) -> None:
    sid, tok = await create_session(live)
    await join(live, sid, tok, AGENT)
    first = await join(live, sid, tok, USER)
    second = await join(live, sid, tok, USER, wait_opened=False)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await second.read()
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    third = await join(live, sid, tok, USER, takeover=True)
    assert third.opened is not None
    assert third.opened.session.state == session_pb2.SESSION_STATE_ACTIVE
    assert [p.role for p in third.opened.participants] == [AGENT]  # the replaced user is gone
    await first.until(is_event(E.EVENT_TYPE_REPLACED))
    with pytest.raises(grpc.aio.AioRpcError) as old:
        await first.read()
    assert old.value.code() == grpc.StatusCode.ABORTED
    # A window in which something must NOT happen: for 4x the pause grace after the old user's
    # stream ended, the session does not pause (the takeover kept a USER in it).
    await asyncio.sleep(4 * PAUSE_GRACE_S)
    assert (await get_session(live, sid)).state == session_pb2.SESSION_STATE_ACTIVE


async def test_terminate_while_live_ends_every_stream_ok(live: Running) -> None:
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER)
    obs = await join(live, sid, tok, OBSERVER)
    await terminate(live, sid)
    for peer in (agent, user, obs):
        ended = await peer.until(is_event(E.EVENT_TYPE_SESSION_ENDED))
        assert ended.event.state == session_pb2.SESSION_STATE_TERMINATED
        assert ended.event.end_reason == session_pb2.END_REASON_TERMINATED
        assert await peer.read() is None
        assert await peer.call.code() == grpc.StatusCode.OK
    late = await join(live, sid, tok, USER, wait_opened=False)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await late.read()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_expiry_with_short_max_duration(database_url: str) -> None:
    async with serving(database_url, expiring_lead_ms=400, pause_grace_ms=50) as r:
        sid, tok = await create_session(r, max_duration=Duration(seconds=1))
        await join(r, sid, tok, AGENT)
        loop = asyncio.get_running_loop()
        user = await join(r, sid, tok, USER)
        t0 = loop.time()
        expiring = await user.until(is_event(E.EVENT_TYPE_SESSION_EXPIRING), timeout=3)
        t_expiring = loop.time() - t0
        left = expiring.event.time_left.ToMilliseconds()
        assert 150 <= left <= 450  # the lead is 400 ms; a busy loop may fire the timer late
        assert 0.4 <= t_expiring <= 1.2
        ended = await user.until(is_event(E.EVENT_TYPE_SESSION_ENDED), timeout=3)
        t_end = loop.time() - t0
        assert 0.9 <= t_end <= 2.0
        assert ended.event.state == session_pb2.SESSION_STATE_EXPIRED
        assert ended.event.end_reason == session_pb2.END_REASON_MAX_DURATION
        s = await get_session(r, sid)
        assert s.state == session_pb2.SESSION_STATE_EXPIRED
        assert abs(s.duration.ToMilliseconds() - 1000) <= 100


async def test_barge_in_truncates_stored_reply(live: Running) -> None:
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER)
    await agent.send(reply_start=ip.ReplyStart(interaction_id="int_long"))
    words = ["one", "two", "three", "four", "five"]
    for n, word in enumerate(words):
        await agent.send(reply_text=ip.ReplyText(text=f"{word} ", offset_ms=n * 200))
        for k in range(10):  # 200 ms of audio per word
            await agent.send(reply_audio=ip.ReplyAudio(pcm=pcm_chunk(n * 10 + k)))
    for _ in range(50):
        await user.until(has("audio"))
    await user.send(playback_mark=ip.PlaybackMark(interaction_id="int_long", played_ms=300))
    await user.send(interrupt=ip.Interrupt(interaction_id="int_long", played_ms=450))
    await user.until(is_event(E.EVENT_TYPE_INTERRUPTED))
    await agent.until(is_event(E.EVENT_TYPE_INTERRUPTED))
    # What the agent still sends for the interrupted reply adds nothing to the history (whether
    # it is relayed is test_media_for_an_interrupted_reply_is_not_relayed).
    await agent.send(reply_audio=ip.ReplyAudio(pcm=pcm_chunk(999), interaction_id="int_long"))
    await agent.send(reply_end=ip.ReplyEnd(interaction_id="int_long"))
    await user.send(text=ip.TextInput(text="stop"))
    await agent.until(has("text"))
    history = await messages(live, sid)
    assert [(m.role, m.text, m.interrupted) for m in history] == [
        (2, "one two three", True),
        (1, "stop", False),
    ]


async def test_media_for_an_interrupted_reply_is_not_relayed(live: Running) -> None:
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER)
    await agent.send(reply_start=ip.ReplyStart(interaction_id="int_cut"))
    for k in range(5):
        await agent.send(reply_audio=ip.ReplyAudio(pcm=pcm_chunk(k)))
    for _ in range(5):
        await user.until(has("audio"))
    await user.send(interrupt=ip.Interrupt(interaction_id="int_cut", played_ms=60))
    await user.until(is_event(E.EVENT_TYPE_INTERRUPTED))
    await agent.until(is_event(E.EVENT_TYPE_INTERRUPTED))
    cut_at = len(user.seen)
    await agent.send(reply_audio=ip.ReplyAudio(pcm=pcm_chunk(999), interaction_id="int_cut"))
    await agent.send(reply_end=ip.ReplyEnd(interaction_id="int_cut"))
    # A reply of its own after those: the room handles an agent's messages in order and every
    # stream gets its messages in order, so anything relayed of the late ones comes before it.
    await agent.send(text=ip.TextInput(text="Anything else?"))
    await user.until(lambda m: has("text")(m) and m.text.text == "Anything else?")
    late = [m for m in user.seen[cut_at:] if has("audio")(m)]
    assert late == [], [(m.audio.interaction_id, len(m.audio.pcm)) for m in late]


async def test_usage_is_accurate_to_a_tenth_of_a_second(live: Running) -> None:
    sid, tok = await create_session(live)
    await join(live, sid, tok, AGENT)
    loop = asyncio.get_running_loop()
    user = await join(live, sid, tok, USER)
    t0 = loop.time()
    await asyncio.sleep(0.6)  # the interaction time being measured: it orders nothing
    await user.send(leave=ip.Leave(reason="done"))
    # Nothing was sent to the user after `opened` (the agent is silent, the session 1 h from
    # expiry, and the user's own leave is announced to the others only): its stream just ends.
    assert await user.drain_to_end() == []
    held = loop.time() - t0
    s = await wait_state(live, sid, session_pb2.SESSION_STATE_PAUSED, timeout_s=1.0)
    # The pause grace (50 ms here) is interaction time too: the user may come back within it.
    assert abs(s.duration.ToMilliseconds() / 1000 - (held + 0.05)) <= 0.1


async def test_user_waits_for_external_agent_then_times_out(live: Running) -> None:
    sid, tok = await create_session(live)
    user = await join(live, sid, tok, USER, wait_opened=False)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await user.until(has("opened"), timeout=4)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (await get_session(live, sid)).state == session_pb2.SESSION_STATE_CREATED


async def test_user_waiting_is_opened_when_agent_attaches(live: Running) -> None:
    sid, tok = await create_session(live)
    user = await join(live, sid, tok, USER, wait_opened=False)
    # A window in which something must NOT happen: a USER alone does not activate the session
    # (for 0.2 s here, well inside the 1.5 s the server waits for an AGENT).
    await asyncio.sleep(0.2)
    assert (await get_session(live, sid)).state == session_pb2.SESSION_STATE_CREATED
    await join(live, sid, tok, AGENT)
    opened = await user.until(has("opened"))
    assert opened.opened.session.state == session_pb2.SESSION_STATE_ACTIVE


async def test_builtin_session_refused_when_the_engine_is_off(live: Running) -> None:
    sid, tok = await create_session(live, external=False)
    user = await join(live, sid, tok, USER, wait_opened=False)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await user.read()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "built-in" in (err.value.details() or "")


async def test_context_update_is_applied_live_and_persisted(live: Running) -> None:
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER)
    await user.send(
        context_update=ip.ContextUpdate(
            dynamic_info="the player holds the red key",
            replace_scene=True,
            scene=[session_pb2.SceneItem(name="door", description="locked, north")],
        )
    )
    cu = await agent.until(has("context_update"))
    assert cu.context_update.dynamic_info == "the player holds the red key"
    assert [s.name for s in cu.context_update.scene] == ["door"]
    s = await get_session(live, sid)
    assert s.dynamic_info == "the player holds the red key"
    assert [i.name for i in s.scene] == ["door"]


async def test_trigger_reaches_agent(live: Running) -> None:
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER)
    trig = ip.Trigger(name="player_entered")
    trig.payload.update({"door": "north", "hp": 12})
    await user.send(trigger=trig)
    got = await agent.until(has("trigger"))
    assert got.trigger.trigger.name == "player_entered"
    assert dict(got.trigger.trigger.payload) == {"door": "north", "hp": 12}


async def test_half_closed_client_still_gets_the_answer_then_leaves(live: Running) -> None:
    """grpcurl -d @ sends its messages and closes its side: the reply must still reach it."""
    sid, tok = await create_session(live)
    agent = await join(live, sid, tok, AGENT)
    user = await join(live, sid, tok, USER)
    await user.send(text=ip.TextInput(text="are you there?"))
    await user.call.done_writing()
    await agent.until(has("text"))
    # The agent's think time, the scenario itself: it answers 0.3 s after the question, well
    # inside the 1.5 s the server keeps a half-closed stream open while it is quiet. (It also
    # lets the half-close reach the server before the answer: nothing observable marks that.)
    await asyncio.sleep(0.3)
    await agent.send(text=ip.TextInput(text="Always."))
    final = await user.until(lambda m: has("text")(m) and m.text.is_final)
    assert final.text.text == "Always."
    # The reply's end, then the end of the stream: the user leaves once the room is quiet.
    rest = await user.drain_to_end(timeout=5)
    assert [(m.WhichOneof("payload"), m.event.type) for m in rest] == [
        ("event", E.EVENT_TYPE_RESPONSE_DONE)
    ]
    assert rest[0].event.interaction_id == final.text.interaction_id
    assert await user.call.code() == grpc.StatusCode.OK
    await wait_state(live, sid, session_pb2.SESSION_STATE_PAUSED, timeout_s=3)
