"""Room, directly: membership, routing, replies and barge-in, lifecycle timers — in memory.

The room talks to stored sessions only through its `SessionPort`; here that is `InMemorySessions`
(the real transition table, no database), so every rule is checked without a server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from parleyd.domain.errors import (
    AlreadyExists,
    ErrorKind,
    FailedPrecondition,
    Unauthenticated,
    Unavailable,
)
from parleyd.domain.lifecycle import EndReason, SessionEvent, SessionState
from parleyd.domain.session import AgentMode, MessageRole
from parleyd.live import AgentLink, BufferedParticipant, Hub, LiveSettings, Room
from parleyd.live import inputs as i
from parleyd.live.frames import (
    Audio,
    Close,
    CloseCode,
    Event,
    EventType,
    Opened,
    OutFrame,
    ParticipantInfo,
    Role,
    StreamError,
    Text,
)

from .sessions import InMemorySessions

FAST = LiveSettings(pause_grace_ms=20, agent_wait_timeout_ms=100, expiring_lead_ms=100)
WAIT_S = 2.0


def member(role: Role, name: str = "", rate: int = 16_000) -> BufferedParticipant:
    return BufferedParticipant(ParticipantInfo(f"p_{name or role.value}", role), sample_rate=rate)


def pending(p: BufferedParticipant) -> list[OutFrame]:
    """Everything queued toward `p` right now (without waiting)."""
    frames = []
    while len(p.outbox):
        frames.append(p.outbox._frames.popleft())
    return frames


async def next_matching(
    p: BufferedParticipant, match: Callable[[OutFrame], bool], timeout_s: float = WAIT_S
) -> OutFrame:
    async with asyncio.timeout(timeout_s):
        while True:
            frame = await p.outbox.get()
            if match(frame):
                return frame


def event(kind: EventType) -> Callable[[OutFrame], bool]:
    return lambda f: isinstance(f, Event) and f.type == kind


@pytest.fixture
def sessions() -> InMemorySessions:
    return InMemorySessions()


async def live_room(
    sessions: InMemorySessions, settings: LiveSettings = FAST, **kw: object
) -> tuple[Hub, Room, BufferedParticipant, BufferedParticipant]:
    """A hub with one ACTIVE room: an external AGENT and a USER, both opened."""
    session, _ = sessions.add(**kw)  # type: ignore[arg-type]
    hub = Hub(sessions, settings)
    room = hub.room_for(session)
    agent, user = member(Role.AGENT), member(Role.USER)
    await room.join(agent, takeover=False)
    await room.join(user, takeover=False)
    pending(agent), pending(user)
    return hub, room, agent, user


async def test_user_and_agent_make_the_session_active_and_both_are_opened(
    sessions: InMemorySessions,
) -> None:
    session, _ = sessions.add()
    room = Hub(sessions, FAST).room_for(session)
    agent, user = member(Role.AGENT), member(Role.USER)
    await room.join(agent, takeover=False)
    assert sessions.sessions[session.id].state == SessionState.CREATED
    await room.join(user, takeover=False)
    assert sessions.sessions[session.id].state == SessionState.ACTIVE
    assert room.session.state == SessionState.ACTIVE
    opened = pending(user)[0]
    assert isinstance(opened, Opened)
    assert [o.id for o in opened.others] == [agent.id]
    joined = [f for f in pending(agent) if isinstance(f, Event)]
    assert [(e.type, e.participant and e.participant.id) for e in joined] == [
        (EventType.PARTICIPANT_JOINED, user.id)
    ]


async def test_a_refused_join_changes_nothing(sessions: InMemorySessions) -> None:
    builtin, _ = sessions.add(agent_mode=AgentMode.BUILTIN)
    room = Hub(sessions, FAST).room_for(builtin)  # no engine on this hub
    with pytest.raises(FailedPrecondition, match="built-in AI engine is not available"):
        await room.join(member(Role.USER), takeover=False)
    assert room.members.all() == []
    assert sessions.sessions[builtin.id].state == SessionState.CREATED
    with pytest.raises(FailedPrecondition, match="agent_mode is BUILTIN"):
        await room.join(member(Role.AGENT), takeover=False)
    assert room.members.all() == []


async def test_second_user_needs_takeover_and_the_old_one_is_replaced(
    sessions: InMemorySessions,
) -> None:
    _, room, _, first = await live_room(sessions)
    with pytest.raises(AlreadyExists):
        await room.join(member(Role.USER, "second"), takeover=False)
    second = member(Role.USER, "second")
    await room.join(second, takeover=True)
    frames = pending(first)
    assert isinstance(frames[0], Event)
    assert frames[0].type == EventType.REPLACED
    assert frames[-1] == Close(
        CloseCode.ABORTED, "replaced by a newer connection that joined with takeover"
    )
    assert [u.id for u in room.members.users] == [second.id]
    assert sessions.sessions[room.session_id].state == SessionState.ACTIVE


async def test_user_audio_goes_to_the_agent_and_observers_only(
    sessions: InMemorySessions,
) -> None:
    _, room, agent, user = await live_room(sessions)
    observer = member(Role.OBSERVER)
    await room.join(observer, takeover=False)
    pending(agent), pending(user), pending(observer)
    await room.receive(user, i.AudioIn(b"\x01\x00" * 320, sequence=7))
    heard = [f for f in pending(agent) if isinstance(f, Audio)]
    assert [(a.pcm, a.sender, a.source_sequence) for a in heard] == [
        (b"\x01\x00" * 320, user.id, 7)
    ]
    assert [f for f in pending(observer) if isinstance(f, Audio)] == heard
    assert pending(user) == []


async def test_user_audio_is_resampled_to_the_receivers_rate(sessions: InMemorySessions) -> None:
    session, _ = sessions.add()
    room = Hub(sessions, FAST).room_for(session)
    agent, user = member(Role.AGENT, rate=16_000), member(Role.USER, rate=48_000)
    await room.join(agent, takeover=False)
    await room.join(user, takeover=False)
    pending(agent)
    for _ in range(10):
        await room.receive(user, i.AudioIn(b"\x10\x00" * 960))  # 20 ms at 48 kHz
    got = [f for f in pending(agent) if isinstance(f, Audio)]
    assert {a.sample_rate for a in got} == {16_000}
    assert abs(sum(len(a.pcm) for a in got) - 10 * 640) <= 4 * 2  # 200 ms at 16 kHz


async def test_user_text_is_stored_before_the_agent_sees_it(sessions: InMemorySessions) -> None:
    _, room, agent, user = await live_room(sessions)
    seen_after: list[int] = []
    original = agent.deliver

    def deliver(frame: OutFrame) -> None:
        if isinstance(frame, Text):
            seen_after.append(len(sessions.messages[room.session_id]))
        original(frame)

    agent.deliver = deliver  # type: ignore[method-assign]
    await room.receive(user, i.TextIn("where is the forge?"))
    assert seen_after == [1]
    stored = sessions.messages[room.session_id]
    assert [(m.role, m.text) for m in stored] == [(MessageRole.USER, "where is the forge?")]


@pytest.mark.parametrize(
    ("sender_role", "frame", "kind", "field"),
    [
        (Role.USER, i.AudioIn(b"\x00" * 3), ErrorKind.INVALID_ARGUMENT, "audio.pcm"),
        (Role.USER, i.AudioIn(b"\x00" * 10_000), ErrorKind.INVALID_ARGUMENT, "audio.pcm"),
        (Role.USER, i.TextIn("   "), ErrorKind.INVALID_ARGUMENT, "text.text"),
        (Role.USER, i.TextIn("x" * 4_097), ErrorKind.INVALID_ARGUMENT, "text.text"),
        (Role.USER, i.TriggerIn("Bad Name", {}), ErrorKind.INVALID_ARGUMENT, "trigger.name"),
        (Role.USER, i.TriggerIn("ok", {}, 4_097), ErrorKind.INVALID_ARGUMENT, "trigger.payload"),
        (Role.USER, i.ReplyStartIn(), ErrorKind.FAILED_PRECONDITION, ""),
        (Role.AGENT, i.InterruptIn(), ErrorKind.FAILED_PRECONDITION, ""),
        (Role.AGENT, i.ReplyStartIn("i" * 65), ErrorKind.INVALID_ARGUMENT, "reply_start"),
        (Role.AGENT, i.ReplyEndIn("int_none"), ErrorKind.FAILED_PRECONDITION, "reply_end"),
        (Role.OBSERVER, i.TextIn("hi"), ErrorKind.FAILED_PRECONDITION, ""),
    ],
)
async def test_a_bad_frame_answers_its_sender_and_changes_nothing(
    sessions: InMemorySessions, sender_role: Role, frame: i.InFrame, kind: ErrorKind, field: str
) -> None:
    _, room, agent, user = await live_room(sessions)
    observer = member(Role.OBSERVER)
    await room.join(observer, takeover=False)
    pending(agent), pending(user), pending(observer)
    sender = {Role.USER: user, Role.AGENT: agent, Role.OBSERVER: observer}[sender_role]
    await room.receive(sender, frame)
    answered = pending(sender)
    assert len(answered) == 1
    error = answered[0]
    assert isinstance(error, StreamError)
    assert (error.code, error.field_path) == (kind, field)
    others = [p for p in (agent, user, observer) if p is not sender]
    assert all(pending(p) == [] for p in others)
    assert sessions.messages[room.session_id] == []
    assert room.replies.current is None


async def test_a_reply_is_relayed_with_offsets_and_stored_whole(
    sessions: InMemorySessions,
) -> None:
    _, room, agent, user = await live_room(sessions)
    await room.receive(agent, i.ReplyStartIn("int_1"))
    await room.receive(agent, i.ReplyTextIn("Hello ", "int_1", offset_ms=0))
    await room.receive(agent, i.ReplyAudioIn(b"\x00\x00" * 320, "int_1"))  # 20 ms
    await room.receive(agent, i.ReplyTextIn("there.", "int_1"))
    await room.receive(agent, i.ReplyEndIn("int_1"))
    frames = pending(user)
    kinds = [
        f.type if isinstance(f, Event) else type(f).__name__
        for f in frames
        if not (isinstance(f, Event) and f.type == EventType.PARTICIPANT_JOINED)
    ]
    assert kinds == [
        EventType.RESPONSE_STARTED,
        "Text",
        "Audio",
        "Text",
        "Text",
        EventType.RESPONSE_DONE,
    ]
    texts = [f for f in frames if isinstance(f, Text)]
    assert [(t.text, t.offset_ms, t.is_final) for t in texts] == [
        ("Hello ", 0, False),
        ("there.", 20, False),
        ("Hello there.", 20, True),
    ]
    stored = sessions.messages[room.session_id]
    assert [(m.role, m.text, m.interaction_id, m.interrupted) for m in stored] == [
        (MessageRole.AGENT, "Hello there.", "int_1", False)
    ]


async def test_barge_in_keeps_only_what_was_played(sessions: InMemorySessions) -> None:
    _, room, agent, user = await live_room(sessions)
    await room.receive(agent, i.ReplyStartIn("int_2"))
    await room.receive(agent, i.ReplyTextIn("A sword costs forty. ", "int_2", offset_ms=0))
    await room.receive(agent, i.ReplyTextIn("Shields cost twenty.", "int_2", offset_ms=1_500))
    await room.receive(agent, i.ReplyAudioIn(b"\x00\x00" * 16_000, "int_2"))  # 1 s: over limit
    assert isinstance(pending(agent)[-1], StreamError)
    for _ in range(50):  # 2 s in 40 ms chunks (the agent declared 20 ms: use 20 ms ones)
        await room.receive(agent, i.ReplyAudioIn(b"\x00\x00" * 320, "int_2"))
    await room.receive(user, i.PlaybackMarkIn("int_2", 900))
    pending(user)
    await room.receive(user, i.InterruptIn("int_2"))
    assert [f.type for f in pending(user) if isinstance(f, Event)] == [EventType.INTERRUPTED]
    stored = sessions.messages[room.session_id]
    assert [(m.text, m.interrupted) for m in stored] == [("A sword costs forty.", True)]
    # Nothing more of the cut reply goes out.
    await room.receive(agent, i.ReplyAudioIn(b"\x00\x00" * 320, "int_2"))
    assert [f for f in pending(user) if isinstance(f, Audio)] == []


async def test_agent_text_outside_a_reply_is_a_complete_reply(sessions: InMemorySessions) -> None:
    _, room, agent, user = await live_room(sessions)
    await room.receive(agent, i.TextIn("Welcome!"))
    frames = pending(user)
    texts = [(f.text, f.is_final) for f in frames if isinstance(f, Text)]
    assert texts == [("Welcome!", True)]
    assert [m.text for m in sessions.messages[room.session_id]] == ["Welcome!"]
    assert room.replies.in_flight is None


async def test_last_user_leaving_pauses_after_the_grace_and_cuts_the_reply(
    sessions: InMemorySessions,
) -> None:
    hub, room, agent, user = await live_room(sessions)
    await room.receive(agent, i.ReplyStartIn("int_3"))
    await room.receive(agent, i.ReplyTextIn("Half a sentence", "int_3", offset_ms=0))
    await room.receive(agent, i.ReplyAudioIn(b"\x00\x00" * 320, "int_3"))
    await room.receive(user, i.PlaybackMarkIn("int_3", 10))
    await room.leave(user, "gone")
    assert sessions.sessions[room.session_id].state == SessionState.ACTIVE  # grace first
    await sessions.wait_state(room.session_id, SessionState.PAUSED, WAIT_S)
    paused = await next_matching(agent, event(EventType.SESSION_PAUSED))
    assert isinstance(paused, Event)
    assert paused.reason == SessionEvent.LEAVE.value
    # 10 of 20 ms played, text without timing: cut in proportion, on a word boundary.
    assert [(m.text, m.interrupted) for m in sessions.messages[room.session_id]] == [("Half", True)]
    assert room.session_id in hub.rooms  # the external AGENT is still here


async def test_a_user_returning_within_the_grace_keeps_the_session_active(
    sessions: InMemorySessions,
) -> None:
    _, room, _, user = await live_room(sessions, LiveSettings(pause_grace_ms=5_000))
    await room.leave(user, "blip")
    again = member(Role.USER, "again")
    await room.join(again, takeover=False)
    assert "pause" not in room._timers
    assert sessions.sessions[room.session_id].state == SessionState.ACTIVE
    assert [s for _, s in sessions.transitions if s.target == SessionState.PAUSED] == []


async def test_a_user_without_an_agent_gives_up_after_the_wait(sessions: InMemorySessions) -> None:
    session, _ = sessions.add()
    hub = Hub(sessions, FAST)
    room = hub.room_for(session)
    user = member(Role.USER)
    await room.join(user, takeover=False)
    closed = await next_matching(user, lambda f: isinstance(f, Close))
    assert closed == Close(CloseCode.UNAVAILABLE, "no AGENT joined within 0.1s")
    assert session.id not in hub.rooms
    assert sessions.sessions[session.id].state == SessionState.CREATED


async def test_terminate_closes_every_participant_and_the_room(
    sessions: InMemorySessions,
) -> None:
    hub, room, agent, user = await live_room(sessions)
    await sessions.apply(room.session_id, SessionEvent.TERMINATE, end_reason=EndReason.TERMINATED)
    for p in (agent, user):
        frames = pending(p)
        ended = [f for f in frames if isinstance(f, Event) and f.type == EventType.SESSION_ENDED]
        assert len(ended) == 1
        assert ended[0].state == SessionState.TERMINATED
        assert frames[-1] == Close(CloseCode.OK, "session terminated")
    assert room.closed
    assert room.members.all() == []
    assert room.session_id not in hub.rooms
    with pytest.raises(FailedPrecondition, match="can no longer be joined"):
        await room.join(member(Role.USER, "late"), takeover=False)


async def test_max_duration_warns_then_expires(sessions: InMemorySessions) -> None:
    _, room, _, user = await live_room(sessions, max_duration_ms=300)
    warning = await next_matching(user, event(EventType.SESSION_EXPIRING))
    assert isinstance(warning, Event)
    assert warning.time_left_ms is not None
    assert 0 <= warning.time_left_ms <= FAST.expiring_lead_ms
    ended = await next_matching(user, event(EventType.SESSION_ENDED))
    assert isinstance(ended, Event)
    assert ended.end_reason == EndReason.MAX_DURATION
    assert sessions.sessions[room.session_id].state == SessionState.EXPIRED


class _FakeEngine(BufferedParticipant):
    def __init__(self, link: AgentLink) -> None:
        super().__init__(ParticipantInfo("p_engine", Role.AGENT))
        self.link = link
        self.started = asyncio.Event()

    def start(self) -> None:
        self.started.set()


async def test_the_builtin_agent_joins_with_the_first_user_through_its_link(
    sessions: InMemorySessions,
) -> None:
    engines: list[_FakeEngine] = []

    def factory(link: AgentLink) -> _FakeEngine:
        engines.append(_FakeEngine(link))
        return engines[-1]

    session, _ = sessions.add(agent_mode=AgentMode.BUILTIN)
    await sessions.append_message(session.id, MessageRole.USER, "earlier", "")
    hub = Hub(sessions, FAST, agent_factory=factory)
    room = hub.room_for(session)
    user = member(Role.USER, rate=48_000)
    await room.join(user, takeover=False)
    (engine,) = engines
    assert engine.started.is_set()
    assert room.members.agent is engine
    assert sessions.sessions[session.id].state == SessionState.ACTIVE
    assert engine.link.user_sample_rate() == 48_000
    assert [m.text for m in await engine.link.load_history(last=5)] == ["earlier"]
    await engine.link.set_summary("they met")
    assert room.session.summary == "they met"
    pending(user)
    await engine.link.send(engine, i.TextIn("Hello, traveller."))
    assert [f.text for f in pending(user) if isinstance(f, Text)] == ["Hello, traveller."]
    # Pausing sends the engine away; it comes back with the next user.
    await sessions.apply(session.id, SessionEvent.DISCONNECT)
    assert engine.closed
    assert room.members.agent is None


async def test_hub_heartbeats_active_rooms_and_recovers_orphans(
    sessions: InMemorySessions,
) -> None:
    hub, room, _, _ = await live_room(sessions)
    orphan, _ = sessions.add()
    await sessions.apply(orphan.id, SessionEvent.JOIN)
    await hub.heartbeat_once()
    assert sessions.heartbeats == [[room.session_id]]
    assert await hub.recover() == [orphan.id]
    assert sessions.sessions[orphan.id].state == SessionState.PAUSED
    assert sessions.sessions[room.session_id].state == SessionState.ACTIVE


async def test_a_revoked_key_evicts_everyone_and_pauses_at_once(sessions: InMemorySessions) -> None:
    hub, room, agent, user = await live_room(sessions, LiveSettings(pause_grace_ms=60_000))
    await sessions.revoke(room.session.api_key_id)
    reason = "the API key that created this session was revoked"
    for p in (agent, user):
        assert pending(p)[-1] == Close(CloseCode.UNAUTHENTICATED, reason)
    assert sessions.sessions[room.session_id].state == SessionState.PAUSED  # no grace
    assert room.members.all() == []
    assert room.session_id not in hub.rooms
    with pytest.raises(Unauthenticated, match="revoked"):
        await sessions.admit(room.session_id, sessions.tokens[room.session_id])


async def test_the_pause_grace_is_not_billed(sessions: InMemorySessions) -> None:
    _, room, _, user = await live_room(sessions, LiveSettings(pause_grace_ms=300))
    joined = sessions.sessions[room.session_id].active_since_ms
    assert joined is not None
    before = sessions.now_ms()
    await room.leave(user, "gone")
    after = sessions.now_ms()
    await sessions.wait_state(room.session_id, SessionState.PAUSED, WAIT_S)
    used = sessions.sessions[room.session_id].duration_ms
    # Interaction time ends when the last USER left, not 300 ms later when the session paused.
    assert before - joined <= used <= after - joined


async def test_a_pause_the_database_refuses_is_tried_again(
    sessions: InMemorySessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, room, _, user = await live_room(sessions, LiveSettings(pause_grace_ms=20))
    refusals = 2
    apply = sessions.apply

    async def flaky_apply(session_id: str, event: SessionEvent, **kw: object) -> object:
        nonlocal refusals
        if event == SessionEvent.LEAVE and refusals:
            refusals -= 1
            raise Unavailable("the database is unreachable; try again shortly")
        return await apply(session_id, event, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sessions, "apply", flaky_apply)
    await room.leave(user, "gone")
    await sessions.wait_state(room.session_id, SessionState.PAUSED, WAIT_S)
    assert refusals == 0
