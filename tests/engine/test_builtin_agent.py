"""The built-in engine end to end: real speech in over Interact, a spoken, lip-synced answer out."""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2

from tests.engine.speech import say, silence
from tests.support.interact import Peer, has, is_event, join
from tests.support.server import Running, serving
from tests.support.sessions import BROM, builtin_session, get_session, messages, wait_state
from tests.support.waiting import wait_until

SITUATION = BROM + " Refunds are given within seven days if the blade is unused."


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[Running]:
    async with serving(sqlite_url, engine="on", greeting="off", pause_grace_ms=100) as r:
        yield r


async def brom(
    r: Running, connection_type: int = session_pb2.CONNECTION_TYPE_AUDIO, **fields: Any
) -> tuple[str, str]:
    """(id, access token) of a new session with Brom, who also has a refund policy here."""
    resp = await builtin_session(r, SITUATION, connection_type, **fields)
    return resp.session.id, resp.access_token


async def user(r: Running, sid: str, tok: str, rate: int = 16_000) -> Peer:
    """Joins as the USER; the engine loads its speech models before `opened`: up to 20 s."""
    return await join(r, sid, tok, ip.ROLE_USER, rate=rate, opened_timeout=20)


async def speak(peer: Peer, pcm: bytes, rate: int) -> None:
    """Streams `pcm` in real-time 20 ms chunks, like a microphone would."""
    step = rate * 20 // 1000 * 2
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n, k in enumerate(range(0, len(pcm), step)):
        await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))  # paces it: real time
        await peer.send(audio=ip.AudioInput(pcm=pcm[k : k + step], sequence=n))


async def collect_reply(peer: Peer, timeout: float = 30) -> dict[str, Any]:
    """Reads one whole reply: its audio, final text and visemes."""
    out: dict[str, Any] = {"audio": bytearray(), "visemes": [], "text": "", "rates": set()}
    started = await peer.until(is_event(ip.EVENT_TYPE_RESPONSE_STARTED), timeout=timeout)
    out["interaction_id"] = started.event.interaction_id
    while True:
        m = await peer.until(lambda _: True, timeout=timeout)
        kind = m.WhichOneof("payload")
        if kind == "audio":
            assert m.audio.interaction_id == out["interaction_id"]
            out["audio"].extend(m.audio.pcm)
            out["rates"].add(m.audio.sample_rate)
        elif kind == "visemes":
            out["visemes"].extend((v.id, v.offset_ms) for v in m.visemes.visemes)
        elif kind == "text" and m.text.is_final:
            out["text"] = m.text.text
        elif kind == "event" and m.event.type == ip.EVENT_TYPE_RESPONSE_DONE:
            return out


def rms(pcm: bytes) -> float:
    n = len(pcm) // 2
    if not n:
        return 0.0
    samples = struct.unpack(f"<{n}h", pcm[: n * 2])
    return (sum(s * s for s in samples) / n) ** 0.5


@pytest.mark.parametrize("rate", [16_000, 48_000])
async def test_spoken_question_gets_a_spoken_lip_synced_answer(engine: Running, rate: int) -> None:
    sid, tok = await brom(engine)
    peer = await user(engine, sid, tok, rate)
    question = say("how much is a sword", rate=rate) + silence(700, rate)
    await speak(peer, silence(200, rate) + question, rate)
    final = await peer.until(lambda m: has("transcript")(m) and m.transcript.is_final, timeout=20)
    assert "sword" in final.transcript.text
    kinds = peer.kinds()
    assert kinds.index("EVENT_TYPE_SPEECH_STARTED") < kinds.index("EVENT_TYPE_SPEECH_STOPPED")
    reply = await collect_reply(peer)
    assert reply["rates"] == {rate}
    assert rms(bytes(reply["audio"])) > 300  # audible, not silence
    assert "forty" in reply["text"].lower()
    audio_ms = len(reply["audio"]) / 2 / rate * 1000
    offsets = [o for _, o in reply["visemes"]]
    assert offsets, "no visemes"
    assert offsets == sorted(offsets)
    assert all(0 <= o <= audio_ms for o in offsets)
    history = await messages(engine, sid)
    assert [m.role for m in history] == [1, 2]
    assert "sword" in history[0].text
    assert history[1].text == reply["text"].strip()


async def test_text_in_spoken_reply_out(engine: Running) -> None:
    sid, tok = await brom(engine)
    peer = await user(engine, sid, tok)
    await peer.send(text=ip.TextInput(text="What is your refund policy?"))
    reply = await collect_reply(peer)
    assert "refund" in reply["text"].lower() or "seven days" in reply["text"].lower()
    assert rms(bytes(reply["audio"])) > 300


async def test_trigger_gets_a_reaction_and_context_update_changes_the_answer(
    engine: Running,
) -> None:
    sid, tok = await brom(engine)
    peer = await user(engine, sid, tok)
    trig = ip.Trigger(name="player_entered")
    await peer.send(trigger=trig)
    reaction = await collect_reply(peer)
    assert reaction["text"]
    sale = "Today swords are on sale: a sword costs ten gold coins."
    await peer.send(context_update=ip.ContextUpdate(dynamic_info=sale))

    async def applied() -> bool:
        return (await get_session(engine, sid)).dynamic_info == sale

    # The session the engine answers from has the update before the question is asked.
    await wait_until(applied, timeout_s=5, what="context_update applied to the session")
    await peer.send(text=ip.TextInput(text="How much is a sword today?"))
    reply = await collect_reply(peer)
    assert "ten" in reply["text"].lower()


async def test_barge_in_stops_the_voice_and_keeps_only_what_was_heard(engine: Running) -> None:
    sid, tok = await brom(engine)
    peer = await user(engine, sid, tok)
    await peer.send(
        text=ip.TextInput(text="Tell me everything about the forge, the well and the swords.")
    )
    started = await peer.until(is_event(ip.EVENT_TYPE_RESPONSE_STARTED), timeout=20)
    iid = started.event.interaction_id
    # The user hears 1.2 s of the reply (the client has received that much audio), and says so.
    received_ms = 0.0

    def reply_audio(m: ip.InteractResponse) -> bool:
        nonlocal received_ms
        if has("audio")(m) and m.audio.interaction_id == iid:
            received_ms += len(m.audio.pcm) / 2 / m.audio.sample_rate * 1000
        return received_ms >= 1200

    await peer.until(reply_audio, timeout=20)
    await peer.send(playback_mark=ip.PlaybackMark(interaction_id=iid, played_ms=1200))
    # The user talks over it: real speech, detected by the engine's own voice activity detection.
    await speak(peer, say("wait stop") + silence(500), 16_000)
    interrupted = await peer.until(is_event(ip.EVENT_TYPE_INTERRUPTED), timeout=10)
    assert interrupted.event.interaction_id == iid
    # A window in which something must NOT happen: for 0.5 s after INTERRUPTED, no more audio
    # of the cut reply reaches the user.
    after = await peer.read_for(0.5)
    late = [m for m in after if has("audio")(m) and m.audio.interaction_id == iid]
    assert late == []
    history = await messages(engine, sid)
    agent_turns = [m for m in history if m.role == 2 and m.interaction_id == iid]
    assert len(agent_turns) == 1
    assert agent_turns[0].interrupted
    # Only what was heard (1.2 s of the reply) is kept, not the whole answer.
    full = " ".join(
        m.text.text for m in peer.seen if has("text")(m) and m.text.interaction_id == iid
    )
    assert 0 < len(agent_turns[0].text) < len(full)


async def test_video_session_streams_face_frames(engine: Running) -> None:
    from PIL import Image

    sid, tok = await brom(engine, session_pb2.CONNECTION_TYPE_VIDEO, avatar_id="brom")
    peer = await user(engine, sid, tok)
    await peer.send(text=ip.TextInput(text="How much is a shield?"))
    frames: list[Any] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while loop.time() - t0 < 3.0:
        m = await peer.until(lambda _: True, timeout=10)
        if has("video")(m):
            frames.append(m.video)
    fps = len(frames) / (loop.time() - t0)
    # 15 fps is the schedule; a loaded machine may deliver fewer, never a burst above it.
    assert 8 <= fps <= 17
    sizes = {Image.open(io.BytesIO(f.image)).size for f in frames}
    assert sizes == {(320, 240)}
    assert {f.mime_type for f in frames} == {"image/jpeg"}
    assert len({f.image for f in frames}) > 1  # the mouth moves


async def test_builtin_session_pauses_when_the_user_leaves_and_resumes(engine: Running) -> None:
    sid, tok = await brom(engine)
    peer = await user(engine, sid, tok)
    await peer.send(text=ip.TextInput(text="Hello!"))
    await collect_reply(peer)
    await peer.send(leave=ip.Leave())
    await peer.drain_to_end()
    await wait_state(engine, sid, session_pb2.SESSION_STATE_PAUSED, timeout_s=2.5)
    again = await user(engine, sid, tok)
    await again.send(text=ip.TextInput(text="Where is your forge?"))
    reply = await collect_reply(again)
    assert "well" in reply["text"].lower()


async def test_llm_brain_streams_and_a_failing_llm_is_survived(sqlite_url: str) -> None:
    from tests.engine.fake_llm import FakeLlm, Mode

    async with (
        FakeLlm(["A sword", " costs", " twenty gold.", " Anything else?"]) as llm,
        serving(
            sqlite_url,
            engine="on",
            greeting="off",
            llm_base_url=llm.base_url,
            llm_model="fake-model",
            llm_timeout_ms=500,
        ) as r,
    ):
        sid, tok = await brom(r)
        peer = await user(r, sid, tok)
        await peer.send(text=ip.TextInput(text="How much is a sword?"))
        reply = await collect_reply(peer)
        assert reply["text"] == "A sword costs twenty gold. Anything else?"
        assert rms(bytes(reply["audio"])) > 300
        assert SITUATION in llm.requests[-1].system_prompt
        assert llm.requests[-1].messages[-1]["content"] == "How much is a sword?"
        # The LLM stalls past the timeout: the character says so and the session goes on.
        llm.fail_next(Mode.STALL)
        await peer.send(text=ip.TextInput(text="And a shield?"))
        sorry = await collect_reply(peer)
        assert "can't think" in sorry["text"]
        llm.fail_next(Mode.HTTP_500)
        await peer.send(text=ip.TextInput(text="Hello?"))
        assert "can't think" in (await collect_reply(peer))["text"]
        await peer.send(text=ip.TextInput(text="How much is a sword, again?"))
        again = await collect_reply(peer)
        assert again["text"].startswith("A sword costs")
        assert (await get_session(r, sid)).state == session_pb2.SESSION_STATE_ACTIVE
