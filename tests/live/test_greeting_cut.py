"""A new user message while the AI is still talking (the greeting, typically) cuts that reply.

The reply is INTERRUPTED, not DONE: the history keeps what was heard of it (up to the last
playback mark, interrupted=true), stored BEFORE the message that cut it. In memory, with an
AGENT that behaves like the built-in engine (a reply streamed as text, audio and an end).
"""

from __future__ import annotations

import pytest

from parleyd.domain.session import MessageRole
from parleyd.live import BufferedParticipant, Hub, LiveSettings, Room
from parleyd.live import inputs as i
from parleyd.live.frames import Audio, Event, EventType, OutFrame, ParticipantInfo, Role, Text

from .sessions import InMemorySessions

FAST = LiveSettings(pause_grace_ms=20, agent_wait_timeout_ms=100, expiring_lead_ms=100)
CHUNK_20MS = b"\x00\x00" * 320  # 20 ms at 16 kHz


def member(role: Role) -> BufferedParticipant:
    return BufferedParticipant(ParticipantInfo(f"p_{role.value}", role))


def pending(p: BufferedParticipant) -> list[OutFrame]:
    frames = []
    while len(p.outbox):
        frames.append(p.outbox._frames.popleft())
    return frames


def events(frames: list[OutFrame]) -> list[tuple[EventType, str]]:
    return [(f.type, f.interaction_id) for f in frames if isinstance(f, Event)]


@pytest.fixture
def sessions() -> InMemorySessions:
    return InMemorySessions()


async def greeting_playing(
    sessions: InMemorySessions,
) -> tuple[Room, BufferedParticipant, BufferedParticipant]:
    """An ACTIVE room whose AGENT is 2 s into a two-sentence greeting the user has played 1.2 s
    of (the second sentence starts at 1.5 s)."""
    session, _ = sessions.add()
    room = Hub(sessions, FAST).room_for(session)
    agent, user = member(Role.AGENT), member(Role.USER)
    await room.join(agent, takeover=False)
    await room.join(user, takeover=False)
    await room.receive(agent, i.ReplyStartIn("int_greet"))
    await room.receive(agent, i.ReplyTextIn("Welcome to my forge. ", "int_greet", offset_ms=0))
    await room.receive(agent, i.ReplyTextIn("What do you need?", "int_greet", offset_ms=1_500))
    for _ in range(100):
        await room.receive(agent, i.ReplyAudioIn(CHUNK_20MS, "int_greet"))
    await room.receive(user, i.PlaybackMarkIn("int_greet", 1_200))
    pending(agent), pending(user)
    return room, agent, user


def stored(sessions: InMemorySessions, room: Room) -> list[tuple[MessageRole, str, str, bool]]:
    return [
        (m.role, m.text, m.interaction_id, m.interrupted)
        for m in sessions.messages[room.session_id]
    ]


async def test_typed_text_during_the_greeting_interrupts_it_and_follows_it_in_history(
    sessions: InMemorySessions,
) -> None:
    room, agent, user = await greeting_playing(sessions)
    await room.receive(user, i.TextIn("How much is a sword?"))
    assert stored(sessions, room) == [
        (MessageRole.AGENT, "Welcome to my forge.", "int_greet", True),
        (MessageRole.USER, "How much is a sword?", "", False),
    ]
    assert events(pending(user)) == [(EventType.INTERRUPTED, "int_greet")]
    # The AGENT is told the greeting was cut before it sees the question.
    to_agent = pending(agent)
    assert [type(f).__name__ for f in to_agent] == ["Event", "Text"]
    assert events(to_agent) == [(EventType.INTERRUPTED, "int_greet")]
    assert room.replies.in_flight is None
    # The rest of the greeting, still on its way, is dropped; its end is refused, not DONE.
    await room.receive(agent, i.ReplyAudioIn(CHUNK_20MS, "int_greet"))
    await room.receive(agent, i.ReplyTextIn("Anything else?", "int_greet"))
    await room.receive(agent, i.ReplyEndIn("int_greet"))
    assert pending(user) == []
    # The answer is a reply of its own, stored after the question; the greeting stays cut.
    await room.receive(agent, i.ReplyStartIn("int_answer"))
    await room.receive(agent, i.ReplyTextIn("Forty gold.", "int_answer", offset_ms=0))
    await room.receive(agent, i.ReplyAudioIn(CHUNK_20MS, "int_answer"))
    await room.receive(agent, i.ReplyEndIn("int_answer"))
    assert events(pending(user)) == [
        (EventType.RESPONSE_STARTED, "int_answer"),
        (EventType.RESPONSE_DONE, "int_answer"),
    ]
    assert stored(sessions, room)[2:] == [(MessageRole.AGENT, "Forty gold.", "int_answer", False)]


async def test_a_final_transcript_during_a_reply_cuts_it_first(
    sessions: InMemorySessions,
) -> None:
    room, agent, user = await greeting_playing(sessions)
    await room.receive(agent, i.TranscriptIn("where is", is_final=False))
    assert room.replies.in_flight is not None  # a partial transcript is not a message yet
    await room.receive(agent, i.TranscriptIn("where is the well", is_final=True))
    assert stored(sessions, room) == [
        (MessageRole.AGENT, "Welcome to my forge.", "int_greet", True),
        (MessageRole.USER, "where is the well", "", False),
    ]
    frames = pending(user)
    assert events(frames) == [(EventType.INTERRUPTED, "int_greet")]
    assert not any(isinstance(f, Audio) for f in frames)


async def test_nothing_played_stores_nothing_of_the_cut_reply(sessions: InMemorySessions) -> None:
    session, _ = sessions.add()
    room = Hub(sessions, FAST).room_for(session)
    agent, user = member(Role.AGENT), member(Role.USER)
    await room.join(agent, takeover=False)
    await room.join(user, takeover=False)
    await room.receive(agent, i.ReplyStartIn("int_greet"))
    await room.receive(agent, i.ReplyTextIn("Welcome!", "int_greet", offset_ms=0))
    await room.receive(agent, i.ReplyAudioIn(CHUNK_20MS, "int_greet"))
    pending(user)
    await room.receive(user, i.TextIn("Hi"))  # no playback mark: nothing was heard
    assert stored(sessions, room) == [(MessageRole.USER, "Hi", "", False)]
    assert events(pending(user)) == [(EventType.INTERRUPTED, "int_greet")]


async def test_a_reply_that_ended_is_not_touched_by_the_next_message(
    sessions: InMemorySessions,
) -> None:
    room, agent, user = await greeting_playing(sessions)
    await room.receive(agent, i.ReplyEndIn("int_greet"))
    pending(agent), pending(user)
    await room.receive(user, i.TextIn("Thanks."))
    assert stored(sessions, room) == [
        (MessageRole.AGENT, "Welcome to my forge. What do you need?", "int_greet", False),
        (MessageRole.USER, "Thanks.", "", False),
    ]
    assert [f for f in pending(user) if isinstance(f, Event)] == []
    to_agent = pending(agent)
    assert [f.text for f in to_agent if isinstance(f, Text)] == ["Thanks."]
    assert events(to_agent) == []
