"""The built-in AI as the AGENT participant of a room.

It is a participant like any other: the room delivers the user's audio (resampled to 16 kHz),
text, triggers and context changes to its outbox, and it answers through its `AgentLink` with the
same reply frames an external AI backend sends over Interact. Its "transport" is this task.

Pipeline per turn: voice activity -> end of turn (silence or push-to-talk) -> final transcript
(stored in the history by the room) -> brain -> sentence by sentence: synthesis -> text, visemes
and audio paced in real time (a small lead ahead of playback), so a barge-in stops it within one
chunk. VIDEO sessions also get avatar frames whose mouth follows the visemes. With no voice (no
synthesizer, or synthesis failed) a reply of an AUDIO/VIDEO session is text only, announced by a
VOICE_UNAVAILABLE notice with the reason: never silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from parleyd.domain import limits
from parleyd.domain.ids import new_interaction_id
from parleyd.domain.session import ConnectionType
from parleyd.engine.interfaces import (
    LISTEN_RATE,
    AvatarRenderer,
    Brain,
    Persona,
    Recognizer,
    Speech,
    Synthesizer,
    Turn,
    TurnDetector,
    TurnEvent,
    UserInput,
    VisemeAt,
)
from parleyd.live import ALL_KINDS, AgentLink, BufferedParticipant
from parleyd.live import inputs as i
from parleyd.live.frames import (
    Audio,
    Close,
    ContextChanged,
    Event,
    EventType,
    ParticipantInfo,
    Role,
    Text,
    TriggerOut,
    VisemeMark,
)

log = logging.getLogger("parleyd.engine")

HISTORY_FOR_BRAIN = 40
SUMMARY_EVERY = 8


@dataclass(frozen=True, slots=True)
class EngineSettings:
    end_of_turn_silence_ms: int = 300
    playback_lead_ms: int = 200  # how far audio runs ahead of real time
    greeting: bool = True
    video_fps: int = 15


@dataclass(slots=True)
class EngineParts:
    """The swappable stages; `default_parts()` in engine.factory builds the offline ones."""

    turns: Callable[[int], TurnDetector]  # silence_ms -> detector
    recognizer: Callable[[], Recognizer] | None  # None: no speech is heard, only typed text
    brain: Brain
    synthesizer: Synthesizer | None  # None: text only (AUDIO/VIDEO replies say why, see below)
    avatar: Callable[[str], AvatarRenderer] | None  # avatar_id -> renderer
    voice_for: Callable[[str, str], str] = field(default=lambda profile, speaker: "en-us")
    blink: Callable[[int, int], bool] | None = None  # (seed, frame index) -> eyes closed
    split_sentences: Callable[[], Any] | None = None  # -> object with push(str)/flush()
    # Why replies of AUDIO and VIDEO sessions have no voice when `synthesizer` is None: the
    # reason of their VOICE_UNAVAILABLE event.
    voice_unavailable: str = "the engine has no voice"


class BuiltinAgent(BufferedParticipant):
    def __init__(self, link: AgentLink, parts: EngineParts, settings: EngineSettings) -> None:
        self.session_id = link.session.id
        super().__init__(
            ParticipantInfo("p_engine_" + self.session_id[-10:], Role.AGENT, "parleyd-engine"),
            sample_rate=LISTEN_RATE,
            chunk_ms=100,
            receive=ALL_KINDS,
            outbox_capacity=2_000,  # 40 s of user audio: the engine never falls that far behind
        )
        self.link = link
        self.parts = parts
        self.settings = settings
        self.turns = parts.turns(settings.end_of_turn_silence_ms)
        self.recognizer: Recognizer | None = None
        self.history: list[Turn] = []
        self._since_summary = 0
        self._asr_pool = ThreadPoolExecutor(1, thread_name_prefix="asr")
        self._reply_task: asyncio.Task[None] | None = None
        self._reply_id = ""
        self._reply_started = 0.0
        self._reply_visemes: list[VisemeAt] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._greeted = False
        self._hearing = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name=f"engine:{self.session_id}"))

    async def _run(self) -> None:
        try:
            await self._load_history()
            await self._prepare_recognizer()
            if self.link.session.connection_type == ConnectionType.VIDEO and self.parts.avatar:
                self._tasks.append(asyncio.create_task(self._video()))
            while True:
                frame = await self.outbox.get()
                if isinstance(frame, Close):
                    return
                await self._handle(frame)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("engine of %s failed", self.session_id)
        finally:
            await self._stop_reply()
            for t in self._tasks[1:]:
                t.cancel()
            self._asr_pool.shutdown(wait=False, cancel_futures=True)

    async def _load_history(self) -> None:
        messages = await self.link.load_history(last=HISTORY_FOR_BRAIN)
        self.history = [Turn(m.role.value, m.text) for m in messages]

    async def _prepare_recognizer(self) -> None:
        if self.link.session.connection_type == ConnectionType.TEXT or not self.parts.recognizer:
            return
        recognizer = self.parts.recognizer()
        await self._in_asr_thread(recognizer.set_context, self._context_texts())
        self.recognizer = recognizer

    def _context_texts(self) -> list[str]:
        s = self.link.session
        texts = [s.rendered_situation, s.dynamic_info, s.profile, s.agent_id]
        texts += [f"{item.name} {item.description}" for item in s.scene]
        return [t for t in texts if t]

    async def _in_asr_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._asr_pool, fn, *args)

    def persona(self) -> Persona:
        s = self.link.session
        return Persona(
            agent_id=s.agent_id,
            profile=s.profile,
            situation=s.rendered_situation,
            dynamic_info=s.dynamic_info,
            scene=tuple(s.scene),
            summary=s.summary,
            metadata=dict(s.metadata),
        )

    async def _send(self, frame: i.InFrame) -> None:
        await self.link.send(self, frame)

    # -- input --------------------------------------------------------------------------------

    async def _handle(self, frame: Any) -> None:
        if isinstance(frame, Audio):
            await self._hear(frame.pcm)
        elif isinstance(frame, Text) and frame.sender_role == Role.USER:
            await self._stop_reply()
            self._answer(UserInput(text=frame.text), Turn("user", frame.text))
        elif isinstance(frame, TriggerOut):
            self._answer(
                UserInput(trigger=frame.name, payload=frame.payload),
                Turn("system", f"[{frame.name}]"),
            )
        elif isinstance(frame, ContextChanged):
            if self.recognizer is not None:
                await self._in_asr_thread(self.recognizer.set_context, self._context_texts())
        elif isinstance(frame, Event):
            await self._on_event(frame)

    async def _on_event(self, ev: Event) -> None:
        if ev.type == EventType.PARTICIPANT_JOINED and ev.participant is not None:
            if ev.participant.role == Role.USER and self.settings.greeting and not self._greeted:
                self._greeted = True
                if not self.history and self._greeting_wanted():
                    self._answer(UserInput(opening=True), None)
        elif ev.type == EventType.INTERRUPTED and ev.interaction_id == self._reply_id:
            await self._stop_reply()  # the user's `interrupt`: the room already cut the history
        elif ev.type == EventType.SPEECH_STOPPED and ev.reason == "end_of_turn":
            await self._turn_events(self.turns.end_of_turn())

    def _greeting_wanted(self) -> bool:
        value = self.link.session.metadata.get("greeting", "").strip().lower()
        return value not in ("off", "false", "0", "no")

    async def _hear(self, pcm: bytes) -> None:
        if self.recognizer is None:
            return
        if self._hearing:
            partial = await self._in_asr_thread(self.recognizer.feed, pcm)
            if partial:
                await self._send(i.TranscriptIn(partial, is_final=False))
        await self._turn_events(self.turns.feed(pcm))

    async def _turn_events(self, events: Sequence[TurnEvent]) -> None:
        assert self.recognizer is not None or not events
        for ev in events:
            if ev == TurnEvent.SPEECH_STARTED:
                await self._send(i.SpeechIn(started=True))
                if self._reply_running():
                    await self._barge_in()
                self._hearing = True
                assert self.recognizer is not None
                await self._in_asr_thread(self.recognizer.start)
                # The detector needs some speech before it calls it speech: replay what it holds.
                if self.turns.held_speech:
                    await self._in_asr_thread(self.recognizer.feed, self.turns.held_speech)
            elif ev == TurnEvent.SPEECH_STOPPED and self._hearing:
                self._hearing = False
                await self._send(i.SpeechIn(started=False))
                assert self.recognizer is not None
                text = (await self._in_asr_thread(self.recognizer.finish)).strip()
                if text:
                    if self._reply_running():  # began during the turn: the new turn cuts it
                        await self._barge_in()
                    await self._send(i.TranscriptIn(text, is_final=True))
                    self._answer(UserInput(text=text), Turn("user", text))

    # -- replies ------------------------------------------------------------------------------

    def _reply_running(self) -> bool:
        return self._reply_task is not None and not self._reply_task.done()

    def _answer(self, said: UserInput, turn: Turn | None) -> None:
        if turn is not None:
            self.history.append(turn)
            self._since_summary += 1
        previous = self._reply_task
        self._reply_task = asyncio.create_task(self._reply(said, previous))

    async def _barge_in(self) -> None:
        reply_id = self._reply_id
        played = self._played_ms()
        await self._stop_reply()
        if reply_id:
            await self._send(i.ReplyCancelIn(reply_id, played_ms=played))

    def _played_ms(self) -> int:
        if not self._reply_started:
            return 0
        loop = asyncio.get_running_loop()
        return max(0, int((loop.time() - self._reply_started) * 1000))

    async def _stop_reply(self) -> None:
        task = self._reply_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._reply_id = ""
        self._reply_visemes = []
        self._reply_started = 0.0

    async def _reply(self, said: UserInput, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await previous  # replies never overlap: a trigger waits for the answer in flight
        reply_id = new_interaction_id()
        self._reply_id = reply_id
        self._reply_visemes = []
        loop = asyncio.get_running_loop()
        spoken: list[str] = []
        sent_ms = 0.0
        started = False
        splitter = self.parts.split_sentences() if self.parts.split_sentences else None
        voiced = self.link.session.connection_type != ConnectionType.TEXT
        # Why this reply of an AUDIO/VIDEO session goes without voice ("" while it has one). The
        # people are told once, before its text (or the rest of it) comes as text only.
        no_voice = self.parts.voice_unavailable if self.parts.synthesizer is None else ""
        told = False

        async def speak(sentence: str) -> None:
            nonlocal sent_ms, started, no_voice, told
            sentence = sentence.strip()
            if not sentence:
                return
            if not started:
                await self._send(i.ReplyStartIn(reply_id))
                started = True
            spoken.append(sentence)
            synth = self.parts.synthesizer
            rate = self._out_rate()
            speech: Speech | None = None
            if voiced and synth is not None and not no_voice:
                voice = self.parts.voice_for(
                    self.link.session.profile, self.link.session.speaker_id
                )
                try:
                    speech = await synth.synthesize(sentence, voice=voice, sample_rate=rate)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the rest of this reply is text, never silence
                    log.warning("speech synthesis failed in %s: %s", self.session_id, exc)
                    no_voice = f"speech synthesis failed: {exc}"
            if speech is None:
                if voiced and no_voice and not told:
                    told = True
                    notice = i.NoticeIn(EventType.VOICE_UNAVAILABLE, reply_id, no_voice)
                    await self._send(notice)
                await self._send(i.ReplyTextIn(sentence + " ", reply_id))
                return
            base = int(sent_ms)
            await self._send(i.ReplyTextIn(sentence + " ", reply_id, offset_ms=base))
            if speech.visemes:
                marks = tuple(VisemeMark(v.viseme, base + v.offset_ms) for v in speech.visemes)
                self._reply_visemes.extend(VisemeAt(m.id, m.offset_ms) for m in marks)
                await self._send(i.ReplyVisemesIn(marks, reply_id))
            step = self._out_chunk_bytes(rate)
            # The last chunk is filled up with silence: every chunk is exactly the USER's length.
            pcm = speech.pcm + bytes(-len(speech.pcm) % step)
            for k in range(0, len(pcm), step):
                if not self._reply_started:
                    self._reply_started = loop.time()
                # Pace: stay at most `lead` ahead of real-time playback.
                ahead = sent_ms - (loop.time() - self._reply_started) * 1000
                wait = ahead - self.settings.playback_lead_ms
                if wait > 0:
                    await asyncio.sleep(wait / 1000)
                chunk = pcm[k : k + step]
                await self._send(i.ReplyAudioIn(chunk, reply_id, sample_rate=rate))
                sent_ms += len(chunk) / 2 / rate * 1000

        try:
            async for piece in self.parts.brain.reply(self.persona(), self.history, said):
                if splitter is None:
                    await speak(piece)
                    continue
                for sentence in splitter.push(piece):
                    await speak(sentence)
            if splitter is not None:
                for sentence in splitter.flush():
                    await speak(sentence)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the brain failed (LLM down, timeout): say so, stay up
            log.warning("brain failed in %s: %s", self.session_id, exc)
            await speak("Sorry, I can't think clearly right now. Could you say that again?")
        if started:
            await self._send(i.ReplyEndIn(reply_id))
            self.history.append(Turn("agent", " ".join(spoken)))
            self._since_summary += 1
        if self._reply_id == reply_id:
            self._reply_id = ""
            self._reply_started = 0.0
        if self._since_summary >= SUMMARY_EVERY:
            self._since_summary = 0
            self._tasks.append(asyncio.create_task(self._summarize()))

    def _out_rate(self) -> int:
        return self.link.user_sample_rate() or limits.AUDIO_RATE_DEFAULT_HZ

    def _out_chunk_bytes(self, rate: int) -> int:
        """Reply audio goes out in chunks of the length the USER declared at join, which its
        `opened.audio_format.chunk_ms` tells it to expect."""
        chunk_ms = self.link.user_chunk_ms() or limits.AUDIO_CHUNK_DEFAULT_MS
        return rate * chunk_ms // 1000 * 2

    async def _summarize(self) -> None:
        try:
            summary = await self.parts.brain.summarize(self.persona(), self.history)
            if summary.strip():
                await self.link.set_summary(summary.strip())
        except Exception as exc:
            log.warning("summary failed in %s: %s", self.session_id, exc)

    # -- avatar video -------------------------------------------------------------------------

    async def _video(self) -> None:
        assert self.parts.avatar is not None
        avatar = self.parts.avatar(self.link.session.avatar_id or self.link.session.agent_id)
        loop = asyncio.get_running_loop()
        period = 1 / max(1, self.settings.video_fps)
        seed = hash(self.session_id) & 0xFFFF
        start = loop.time()
        index = 0
        while True:
            index += 1
            await asyncio.sleep(max(0.0, start + index * period - loop.time()))
            viseme, offset = "sil", 0
            if self._reply_id and self._reply_started:
                offset = self._played_ms()
                viseme = _viseme_at(self._reply_visemes, offset)
            eyes_closed = self.parts.blink(seed, index) if self.parts.blink else False
            image = avatar.frame(viseme, eyes_closed=eyes_closed)
            await self._send(
                i.ReplyVideoIn(
                    image, "image/jpeg", avatar.width, avatar.height, self._reply_id, offset
                )
            )


def _viseme_at(track: Sequence[VisemeAt], offset_ms: int) -> str:
    current = "sil"
    for v in track:
        if v.offset_ms > offset_ms:
            break
        current = v.viseme
    return current
