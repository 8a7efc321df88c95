"""A missing speech library must not make a silent character (issue 11).

Without libespeak-ng the server still starts, says at start-up what does not work (the banner,
one WARNING, a health service per engine component), and the built-in character answers AUDIO
and VIDEO sessions in text, each reply announced by EVENT_TYPE_VOICE_UNAVAILABLE with the reason.

In memory: the engine without a synthesizer, or with one that fails mid-reply, and the routing of
its notice. For real: `parleyd serve` in a mount namespace where the library is /dev/null.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2, session_service_pb2_grpc

from parleyd.domain.errors import ErrorKind
from parleyd.domain.session import AgentMode, ConnectionType
from parleyd.engine import _espeak, tts
from parleyd.engine.agent import EngineParts, EngineSettings
from parleyd.engine.factory import (
    AVATAR,
    SPEECH_RECOGNITION,
    VOICE,
    VOICE_ACTIVITY,
    ComponentCheck,
    EngineCheck,
    default_parts,
    engine_factory,
)
from parleyd.engine.interfaces import Persona, Speech, Turn, TurnEvent, UserInput, VisemeAt
from parleyd.engine.llm_brain import LlmSettings
from parleyd.engine.sentences import SentenceSplitter
from parleyd.grpc.interact_convert import out_message
from parleyd.live import BufferedParticipant, Hub, LiveSettings, Room
from parleyd.live import inputs as i
from parleyd.live.frames import (
    Audio,
    Event,
    EventType,
    OutFrame,
    ParticipantInfo,
    Role,
    StreamError,
    Text,
    Visemes,
)
from tests.live.sessions import InMemorySessions
from tests.support.interact import Peer, has, is_event, join
from tests.support.process import ParleydProcess, start_parleyd
from tests.support.require import require
from tests.support.sessions import BROM, Client, builtin_session

ANSWER = ("A sword costs forty gold coins.", "Anything else?")
MISSING = "voice (espeak-ng) unavailable: libespeak-ng.so.1 not found"
VOICE_OFF = "engine: voice unavailable"


# -- in memory: the engine with no voice ----------------------------------------------------------


class ScriptedBrain:
    """Answers everything with ANSWER, in two pieces."""

    async def reply(
        self, persona: Persona, history: Sequence[Turn], said: UserInput
    ) -> AsyncIterator[str]:
        for sentence in ANSWER:
            yield sentence + " "

    async def summarize(self, persona: Persona, history: Sequence[Turn]) -> str:
        return ""


class Deaf:
    held_speech = b""

    def feed(self, pcm: bytes) -> list[TurnEvent]:
        return []

    def end_of_turn(self) -> list[TurnEvent]:
        return []

    def reset(self) -> None:
        pass


class FailingVoice:
    """Speaks the first `good` sentences (100 ms each, one viseme), then fails like espeak-ng."""

    def __init__(self, good: int) -> None:
        self.good = good
        self.calls = 0

    async def synthesize(self, text: str, *, voice: str, sample_rate: int) -> Speech:
        self.calls += 1
        if self.calls > self.good:
            raise _espeak.SynthesisError("espeak_Synth failed (-1)")
        return Speech(b"\x10\x00" * (sample_rate // 10), sample_rate, (VisemeAt("aa", 0),))


def parts(synthesizer: FailingVoice | None = None) -> EngineParts:
    return EngineParts(
        turns=lambda silence_ms: Deaf(),
        recognizer=None,
        brain=ScriptedBrain(),
        synthesizer=synthesizer,
        avatar=None,
        split_sentences=SentenceSplitter,
        voice_unavailable=MISSING,
    )


async def room_with_engine(
    engine: EngineParts, connection_type: ConnectionType = ConnectionType.AUDIO
) -> tuple[Hub, Room, BufferedParticipant, BufferedParticipant]:
    """(hub, room, USER, OBSERVER) of an ACTIVE built-in session played by `engine`."""
    sessions = InMemorySessions()
    session, _ = sessions.add(agent_mode=AgentMode.BUILTIN, connection_type=connection_type)
    factory = engine_factory(engine, EngineSettings(greeting=False))
    hub = Hub(sessions, LiveSettings(), agent_factory=factory)
    room = hub.room_for(session)
    user = BufferedParticipant(ParticipantInfo("p_user", Role.USER))
    observer = BufferedParticipant(ParticipantInfo("p_observer", Role.OBSERVER))
    await room.join(user, takeover=False)
    await room.join(observer, takeover=False)
    return hub, room, user, observer


async def one_reply(p: BufferedParticipant, timeout_s: float = 10) -> list[OutFrame]:
    """The frames of `p` from the next RESPONSE_STARTED up to its RESPONSE_DONE."""
    frames: list[OutFrame] = []
    async with asyncio.timeout(timeout_s):
        while True:
            frame = await p.outbox.get()
            if frames or (isinstance(frame, Event) and frame.type == EventType.RESPONSE_STARTED):
                frames.append(frame)
            if isinstance(frame, Event) and frame.type == EventType.RESPONSE_DONE:
                return frames


def notices(frames: Sequence[OutFrame]) -> list[Event]:
    return [f for f in frames if isinstance(f, Event) and f.type == EventType.VOICE_UNAVAILABLE]


def final_text(frames: Sequence[OutFrame]) -> str:
    return next(f.text for f in frames if isinstance(f, Text) and f.is_final)


@pytest.mark.parametrize("connection_type", [ConnectionType.AUDIO, ConnectionType.VIDEO])
async def test_with_no_voice_every_reply_is_text_after_a_notice(
    connection_type: ConnectionType, caplog: pytest.LogCaptureFixture
) -> None:
    hub, room, user, observer = await room_with_engine(parts(None), connection_type)
    try:
        for question in ("How much is a sword?", "And a shield?"):
            await room.receive(user, i.TextIn(question))
            frames = await one_reply(user)
            started = frames[0]
            assert isinstance(started, Event)
            iid = started.interaction_id
            (notice,) = notices(frames)  # once per reply, however many sentences it has
            assert (notice.interaction_id, notice.reason) == (iid, MISSING)
            # The notice comes before the reply's text; then the answer, and no media at all.
            first_text = next(k for k, f in enumerate(frames) if isinstance(f, Text))
            assert frames.index(notice) < first_text
            assert final_text(frames) == " ".join(ANSWER)
            assert not [f for f in frames if isinstance(f, Audio | Visemes)]
            # Observers are told too.
            seen = await one_reply(observer)
            assert [(n.interaction_id, n.reason) for n in notices(seen)] == [(iid, MISSING)]
    finally:
        await hub.shutdown()
    assert "brain failed" not in caplog.text


async def test_a_text_session_gets_no_notice() -> None:
    hub, room, user, _ = await room_with_engine(parts(None), ConnectionType.TEXT)
    try:
        await room.receive(user, i.TextIn("How much is a sword?"))
        frames = await one_reply(user)
        assert notices(frames) == []
        assert final_text(frames) == " ".join(ANSWER)
    finally:
        await hub.shutdown()


async def test_synthesis_failing_mid_reply_goes_on_in_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    voice = FailingVoice(good=1)
    hub, room, user, _ = await room_with_engine(parts(voice))
    try:
        with caplog.at_level(logging.WARNING, logger="parleyd.engine"):
            await room.receive(user, i.TextIn("How much is a sword?"))
            frames = await one_reply(user)
        assert isinstance(frames[0], Event)
        iid = frames[0].interaction_id
        # The first sentence was spoken; the second failed: told once, then sent as text.
        audio = [f for f in frames if isinstance(f, Audio)]
        assert audio
        assert {a.interaction_id for a in audio} == {iid}
        (notice,) = notices(frames)
        assert notice.interaction_id == iid
        assert "speech synthesis failed" in notice.reason
        assert frames.index(notice) > frames.index(audio[-1])
        assert final_text(frames) == " ".join(ANSWER)
        assert [r.getMessage() for r in caplog.records if "brain failed" in r.getMessage()] == []
        assert any("speech synthesis failed" in r.getMessage() for r in caplog.records)
        # The next reply tries the voice again (the failure was for that reply only).
        await room.receive(user, i.TextIn("And a shield?"))
        again = await one_reply(user)
        assert len(notices(again)) == 1
        assert not [f for f in again if isinstance(f, Audio)]
        assert final_text(again) == " ".join(ANSWER)
    finally:
        await hub.shutdown()


async def test_only_the_agent_raises_a_notice_and_never_for_a_cut_reply() -> None:
    sessions = InMemorySessions()
    session, _ = sessions.add()
    room = Hub(sessions, LiveSettings()).room_for(session)
    agent = BufferedParticipant(ParticipantInfo("p_agent", Role.AGENT))
    user = BufferedParticipant(ParticipantInfo("p_user", Role.USER))
    await room.join(agent, takeover=False)
    await room.join(user, takeover=False)

    def drain(p: BufferedParticipant) -> list[OutFrame]:
        out = []
        while len(p.outbox):
            out.append(p.outbox._frames.popleft())
        return out

    drain(agent), drain(user)
    notice = i.NoticeIn(EventType.VOICE_UNAVAILABLE, "int_1", MISSING)
    await room.receive(user, notice)
    (refused,) = drain(user)
    assert isinstance(refused, StreamError)
    assert refused.code == ErrorKind.FAILED_PRECONDITION
    await room.receive(agent, i.NoticeIn(EventType.INTERRUPTED, "int_1", "no"))
    (refused,) = drain(agent)
    assert isinstance(refused, StreamError)
    await room.receive(agent, i.ReplyStartIn("int_1"))
    await room.receive(agent, notice)
    shown = [f for f in drain(user) if isinstance(f, Event)]
    assert [(e.type, e.interaction_id, e.reason) for e in shown] == [
        (EventType.RESPONSE_STARTED, "int_1", ""),
        (EventType.VOICE_UNAVAILABLE, "int_1", MISSING),
    ]
    await room.receive(user, i.InterruptIn("int_1"))
    drain(user)
    await room.receive(agent, notice)  # late, for a reply the user cut: nobody is told
    assert notices(drain(user)) == []
    # Over gRPC it is EVENT_TYPE_VOICE_UNAVAILABLE with the reply's id and the reason.
    pb = out_message(shown[1]).event
    assert (pb.type, pb.interaction_id, pb.reason) == (
        ip.EVENT_TYPE_VOICE_UNAVAILABLE,
        "int_1",
        MISSING,
    )


def test_the_engine_is_assembled_without_a_missing_voice() -> None:
    check = EngineCheck(
        (
            ComponentCheck(
                VOICE,
                "voice",
                "libespeak-ng.so.1 not found",
                "install espeak-ng (apt-get install espeak-ng) or set PARLEYD_ESPEAK_LIBRARY",
                "replies are text only",
            ),
            ComponentCheck(SPEECH_RECOGNITION, "speech recognition"),
            ComponentCheck(VOICE_ACTIVITY, "voice activity detection"),
            ComponentCheck(AVATAR, "avatar"),
        )
    )
    built = default_parts(LlmSettings(), check)
    assert built.synthesizer is None
    assert built.voice_unavailable == "voice (espeak-ng) unavailable: libespeak-ng.so.1 not found"
    assert built.recognizer is not None  # it still hears
    assert built.avatar is not None
    assert [c.health_service for c in check.missing] == ["parleyd.engine.voice"]
    assert check.lines() == [
        "engine: voice unavailable — libespeak-ng.so.1 not found; install espeak-ng (apt-get "
        "install espeak-ng) or set PARLEYD_ESPEAK_LIBRARY; replies are text only",
        "engine: speech recognition ok",
        "engine: voice activity detection ok",
        "engine: avatar ok",
    ]


def test_a_library_that_will_not_load_is_named_briefly() -> None:
    missing = OSError(
        "libespeak-ng.so.1: cannot open shared object file: No such file or directory"
    )
    assert _espeak._unloadable("libespeak-ng.so.1", missing) == "libespeak-ng.so.1 not found"
    broken = OSError("/lib/x86_64-linux-gnu/libespeak-ng.so.1: file too short")
    assert _espeak._unloadable("libespeak-ng.so.1", broken) == (
        "libespeak-ng.so.1 will not load (file too short)"
    )
    assert _espeak.LibraryUnavailable(["a not found", "a not found"]).reason == "a not found"


# -- for real: `parleyd serve` with the library hidden ---------------------------------------------


def _loaded_espeak() -> str | None:
    """The real file of libespeak-ng as the loader finds it here, or None when it is absent."""
    if not tts.espeak_available():
        return None
    ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "libespeak-ng" in os.path.basename(path):
                return os.path.realpath(path)
    return None


def _hiding(library: str) -> list[str]:
    """A command prefix that runs its command in a mount namespace where `library` is empty."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        require("hiding libespeak-ng needs root and `unshare` (util-linux)")
    probe = subprocess.run(
        ["unshare", "-m", "true"], capture_output=True, timeout=10, check=False, text=True
    )
    if probe.returncode != 0:
        require(f"`unshare -m` is not permitted here: {probe.stderr.strip()}")
    return ["unshare", "-m", "sh", "-c", 'mount --bind /dev/null "$0" && exec "$@"', library]


@pytest.fixture
def voiceless(tmp_path: Path) -> Iterator[ParleydProcess]:
    library = _loaded_espeak()
    wrap = _hiding(library) if library is not None else []  # absent already: nothing to hide
    server = start_parleyd(tmp_path, "--greeting", "off", wrap=wrap)
    try:
        yield server
    finally:
        server.stop()


async def health(target: str, service: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


async def text_reply(peer: Peer, question: str) -> tuple[str, list[ip.InteractResponse]]:
    """(interaction id, messages from RESPONSE_STARTED to RESPONSE_DONE) of the answer."""
    await peer.send(text=ip.TextInput(text=question))
    started = await peer.until(is_event(ip.EVENT_TYPE_RESPONSE_STARTED), timeout=20)
    iid = started.event.interaction_id
    reply = [started]
    while not is_event(ip.EVENT_TYPE_RESPONSE_DONE)(reply[-1]):
        reply.append(await peer.until(lambda _: True, timeout=20))
    return iid, reply


async def test_parleyd_without_libespeak_answers_in_text_and_says_why(
    voiceless: ParleydProcess,
) -> None:
    server = voiceless
    # The banner says what works, one line per component, before the "listening" line.
    banner = server.stdout_lines
    (voice_line,) = [line for line in banner if line.startswith(("engine: voice ok", VOICE_OFF))]
    assert voice_line.startswith(VOICE_OFF + " — libespeak-ng")
    assert "install espeak-ng (apt-get install espeak-ng)" in voice_line
    assert "engine: speech recognition ok" in banner
    # Health: the server serves; its voice does not.
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert await health(server.target, "") == serving
    assert await health(server.target, "parley.v1.SessionService") == serving
    assert await health(server.target, "parleyd.engine.voice") == not_serving
    assert await health(server.target, "parleyd.engine.speech_recognition") == serving

    async with grpc.aio.insecure_channel(server.target) as channel:
        client = Client(session_service_pb2_grpc.SessionServiceStub(channel), server.dev_api_key)
        created = await builtin_session(client, BROM, session_pb2.CONNECTION_TYPE_AUDIO)
        peer = await join(
            client, created.session.id, created.access_token, ip.ROLE_USER, opened_timeout=20
        )
        answers = []
        for question in ("How much is a sword?", "Where is your forge?"):
            iid, reply = await text_reply(peer, question)
            kinds = [m.WhichOneof("payload") for m in reply]
            told = [k for k, m in enumerate(reply) if is_event(ip.EVENT_TYPE_VOICE_UNAVAILABLE)(m)]
            assert len(told) == 1, kinds  # once per reply
            notice = reply[told[0]].event
            assert notice.interaction_id == iid
            assert "espeak" in notice.reason
            assert told[0] < kinds.index("text")  # before the reply's text
            assert "audio" not in kinds
            assert "visemes" not in kinds
            (final,) = [m.text for m in reply if has("text")(m) and m.text.is_final]
            assert final.interaction_id == iid
            answers.append(final.text)
        assert "forty" in answers[0].lower()
        assert "well" in answers[1].lower()
    assert server.stop() == 0
    log = server.log()
    warnings = [line for line in log.splitlines() if "level=warning" in line]
    about_voice = [line for line in warnings if "voice unavailable" in line]
    assert len(about_voice) == 1, warnings
    assert "libespeak-ng" in about_voice[0]
    assert "brain failed" not in log
    assert "no espeak-ng voice" not in log
