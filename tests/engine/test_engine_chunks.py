"""The built-in engine keeps the contract `opened` states, end to end over Interact.

- Its reply audio comes in chunks of the length the USER declared (`opened.audio_format`).
- A question typed while the greeting plays cuts the greeting: INTERRUPTED (never DONE), stored
  as far as it was heard, interrupted, and BEFORE the question in the history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from parley.v1 import interact_pb2 as ip

from parleyd.domain.session import AgentMode
from parleyd.live import AgentLink, BufferedParticipant, Hub, LiveSettings
from parleyd.live.frames import ParticipantInfo, Role
from tests.live.sessions import InMemorySessions
from tests.support.interact import Peer, has, is_event, join
from tests.support.server import Running, serving
from tests.support.sessions import BROM, builtin_session, messages

GREETING = (
    "Welcome to my forge, traveller. I have swords, shields and axes for sale, all made here. "
    "Take your time and look around."
)


@pytest.fixture
async def greeting_engine(sqlite_url: str) -> AsyncIterator[Running]:
    async with serving(sqlite_url, engine="on", greeting="on", pause_grace_ms=100) as r:
        yield r


async def user(r: Running, rate: int, chunk_ms: int, **session: Any) -> tuple[str, Peer]:
    """(session id, USER) of a new Brom session; `opened` waits for the speech models (20 s)."""
    resp = await builtin_session(r, BROM, **session)
    sid = resp.session.id
    peer = await join(
        r, sid, resp.access_token, ip.ROLE_USER, rate=rate, chunk_ms=chunk_ms, opened_timeout=20
    )
    return sid, peer


async def reply_audio(peer: Peer, timeout: float = 30) -> tuple[str, list[ip.AudioOutput]]:
    """(interaction id, audio messages) of the next whole reply."""
    started = await peer.until(is_event(ip.EVENT_TYPE_RESPONSE_STARTED), timeout=timeout)
    iid = started.event.interaction_id
    chunks: list[ip.AudioOutput] = []
    while True:
        m = await peer.until(lambda _: True, timeout=timeout)
        if has("audio")(m) and m.audio.interaction_id == iid:
            chunks.append(m.audio)
        elif is_event(ip.EVENT_TYPE_RESPONSE_DONE)(m) and m.event.interaction_id == iid:
            return iid, chunks


@pytest.mark.parametrize(("rate", "chunk_ms", "size"), [(16_000, 20, 640), (48_000, 60, 5_760)])
async def test_reply_audio_comes_in_the_chunks_opened_announces(
    sqlite_url: str, rate: int, chunk_ms: int, size: int
) -> None:
    async with serving(sqlite_url, engine="on", greeting="off") as r:
        _, peer = await user(r, rate, chunk_ms)
        assert peer.opened is not None
        assert peer.opened.audio_format == ip.AudioFormat(sample_rate=rate, chunk_ms=chunk_ms)
        await peer.send(text=ip.TextInput(text="How much is a sword?"))
        _, chunks = await reply_audio(peer)
        assert len(chunks) > 10
        assert {c.sample_rate for c in chunks} == {rate}
        assert {len(c.pcm) for c in chunks} == {size}  # every one, the last included
        # Offsets advance by exactly one chunk: nothing missing, nothing overlapping.
        offsets = [c.offset_ms for c in chunks]
        assert offsets == [n * chunk_ms for n in range(len(chunks))]


async def test_a_question_typed_during_the_greeting_interrupts_it(
    greeting_engine: Running,
) -> None:
    r = greeting_engine
    sid, peer = await user(r, 16_000, 20, metadata={"greeting": GREETING})
    started = await peer.until(is_event(ip.EVENT_TYPE_RESPONSE_STARTED), timeout=20)
    greeting_id = started.event.interaction_id
    received_ms = 0.0

    def greeting_audio(m: ip.InteractResponse) -> bool:
        nonlocal received_ms
        if has("audio")(m) and m.audio.interaction_id == greeting_id:
            received_ms += len(m.audio.pcm) / 2 / m.audio.sample_rate * 1000
        return received_ms >= 800

    # The player has heard 0.6 s of the greeting (its first sentence began) and asks.
    await peer.until(greeting_audio, timeout=20)
    await peer.send(playback_mark=ip.PlaybackMark(interaction_id=greeting_id, played_ms=600))
    await peer.send(text=ip.TextInput(text="How much is a sword?"))
    cut = await peer.until(is_event(ip.EVENT_TYPE_INTERRUPTED), timeout=10)
    assert cut.event.interaction_id == greeting_id
    answer_id, _ = await reply_audio(peer)
    assert answer_id != greeting_id
    greeting_done = [
        m
        for m in peer.seen
        if is_event(ip.EVENT_TYPE_RESPONSE_DONE)(m) and m.event.interaction_id == greeting_id
    ]
    assert greeting_done == []
    history = [(m.role, m.text, m.interaction_id, m.interrupted) for m in await messages(r, sid)]
    assert len(history) == 3, history
    (g_role, g_text, g_id, g_cut), question, (a_role, a_text, a_id, a_cut) = history
    assert (g_role, g_id, g_cut) == (2, greeting_id, True)
    # What was heard of it (0.6 s): the start of its first sentence.
    assert g_text.startswith("Welcome")
    assert GREETING.startswith(g_text)
    assert len(g_text) <= len("Welcome to my forge, traveller.")
    assert question == (1, "How much is a sword?", "", False)
    assert (a_role, a_id, a_cut) == (2, answer_id, False)
    assert "forty" in a_text.lower()


class _Engine(BufferedParticipant):
    def __init__(self, link: AgentLink) -> None:
        super().__init__(ParticipantInfo("p_engine", Role.AGENT, "parleyd-engine"))
        self.link = link

    def start(self) -> None:
        pass


async def test_the_link_tells_the_engine_the_users_chunk_length() -> None:
    sessions = InMemorySessions()
    engines: list[_Engine] = []

    def factory(link: AgentLink) -> _Engine:
        engines.append(_Engine(link))
        return engines[-1]

    session, _ = sessions.add(agent_mode=AgentMode.BUILTIN)
    room = Hub(sessions, LiveSettings(), agent_factory=factory).room_for(session)
    await room.join(
        BufferedParticipant(ParticipantInfo("p_user", Role.USER), sample_rate=8_000, chunk_ms=60),
        takeover=False,
    )
    (engine,) = engines
    assert (engine.link.user_sample_rate(), engine.link.user_chunk_ms()) == (8_000, 60)
