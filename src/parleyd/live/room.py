"""A room: the live side of one session — its participants, routing, replies and timers.

Membership and lifecycle changes (join, leave, pause, expiry) run under the room's lock; frame
routing does not wait on it: `deliver` never blocks, so one slow participant never stalls others.
Audio frames never touch the database; text is stored before anyone sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ulid import ULID

from parleyd.domain.errors import AlreadyExists, FailedPrecondition
from parleyd.domain.lifecycle import EndReason, SessionEvent, SessionState, Transition
from parleyd.domain.session import AgentMode, MessageRole, Session
from parleyd.live import inputs as i
from parleyd.live.frames import (
    Audio,
    CloseCode,
    ContextChanged,
    Event,
    EventType,
    Opened,
    OutFrame,
    Role,
    StreamError,
    Text,
    Transcript,
    TriggerOut,
    Video,
    Visemes,
)
from parleyd.live.participant import Participant

if TYPE_CHECKING:
    from parleyd.live.hub import Hub

log = logging.getLogger("parleyd.live")

# google.rpc.Code numbers used in StreamError.
_INVALID_ARGUMENT = 3
_FAILED_PRECONDITION = 9

TEXT_MAX_CHARS = 4_096
TRIGGER_PAYLOAD_MAX_BYTES = 4_096
INTERACTION_ID_MAX_CHARS = 64
_TRIGGER_NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")


def new_interaction_id() -> str:
    return "int_" + str(ULID())


@dataclass(slots=True)
class Reply:
    """The AI reply in flight."""

    interaction_id: str
    agent_sample_rate: int
    audio_ms: float = 0.0
    parts: list[tuple[int, str]] = field(default_factory=list)
    played_ms: int = 0
    interrupted: bool = False
    ended: bool = False

    def text(self) -> str:
        return "".join(t for _, t in self.parts)

    def played_text(self, played_ms: int) -> str:
        """The part of the reply the user heard: text spoken before `played_ms`."""
        if not self.parts:
            return ""
        if self.audio_ms <= 0:
            return "" if played_ms <= 0 else self.text()
        timed = any(offset > 0 for offset, _ in self.parts[1:])
        if timed:
            return "".join(t for offset, t in self.parts if offset < played_ms).rstrip()
        # Text came with no timing: cut it in proportion to the audio heard, on a word boundary.
        words = self.text().split()
        keep = int(len(words) * min(1.0, played_ms / self.audio_ms))
        return " ".join(words[:keep])


class Room:
    def __init__(self, hub: Hub, session: Session) -> None:
        self.hub = hub
        self.session = session
        self.session_id = session.id
        self.participants: dict[str, Participant] = {}
        self.agent: Participant | None = None
        self.reply: Reply | None = None
        self._finished: dict[str, Reply] = {}
        self.lock = asyncio.Lock()
        self._timers: dict[str, asyncio.TimerHandle | asyncio.Task[None]] = {}
        self.closed = False

    # -- membership ---------------------------------------------------------------------------

    @property
    def users(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.role == Role.USER]

    @property
    def ai_ready(self) -> bool:
        return self.agent is not None

    async def join(self, p: Participant, *, takeover: bool) -> None:
        """Adds `p`; raises AlreadyExists / FailedPrecondition and changes nothing when refused."""
        async with self.lock:
            session = await self.hub.manager.repo.get_session(self.session_id)
            self.session = session
            if session.state.ended:
                raise FailedPrecondition(
                    f"session is {session.state.value.upper()}: it can no longer be joined"
                )
            if p.role == Role.AGENT:
                await self._join_agent(p, takeover)
            elif p.role == Role.USER:
                await self._join_user(p, takeover)
            else:
                self._add(p)
                self._open(p)

    async def _join_agent(self, p: Participant, takeover: bool) -> None:
        if self.session.agent_mode != AgentMode.EXTERNAL:
            raise FailedPrecondition(
                "this session's agent_mode is BUILTIN: the built-in engine is its AI; create the "
                "session with agent_mode AGENT_MODE_EXTERNAL to attach your own AGENT"
            )
        if self.agent is not None:
            if not takeover:
                raise AlreadyExists(
                    "this session already has an AGENT; join with takeover to replace it"
                )
            self._replace(self.agent)
        self.agent = p
        self._add(p)
        self._open(p)
        if self.users:
            await self._activate()

    async def _join_user(self, p: Participant, takeover: bool) -> None:
        if self.session.agent_mode == AgentMode.BUILTIN and not self.hub.builtin_engine_available:
            raise FailedPrecondition(
                "the built-in AI engine is not available on this server (it runs with --engine "
                "off, or a speech component is missing: see its log); create the session with "
                "agent_mode AGENT_MODE_EXTERNAL and attach your own AGENT"
            )
        current = self.users
        if len(current) >= self.hub.settings.max_users:
            if not takeover:
                raise AlreadyExists(
                    "this session already has a USER connected; join with takeover to replace it"
                )
            self._replace(current[0])
        self._cancel("pause")
        self._add(p)
        if self.session.agent_mode == AgentMode.BUILTIN and self.agent is None:
            self._attach_builtin()
        if self.ai_ready:
            await self._activate()
        else:
            self._start_agent_wait(p)

    def _attach_builtin(self) -> None:
        """The built-in engine joins as this room's AGENT (it leaves again when the room pauses)."""
        assert self.hub.agent_factory is not None
        engine = self.hub.agent_factory(self)
        self.agent = engine
        self._add(engine)
        self._open(engine)
        start = getattr(engine, "start", None)
        if callable(start):
            start()

    def _detach_builtin(self, reason: str) -> None:
        if self.session.agent_mode == AgentMode.BUILTIN and self.agent is not None:
            engine = self.agent
            self._remove(engine)
            engine.close(CloseCode.OK, reason)

    def _add(self, p: Participant) -> None:
        self.participants[p.id] = p
        log.info(
            "participant joined",
            extra={"session_id": self.session_id, "participant": p.id, "role": p.role.value},
        )

    def _open(self, p: Participant) -> None:
        others = tuple(o.info for o in self.participants.values() if o.id != p.id and o.opened)
        p.deliver(Opened(p.info, p.sample_rate, p.chunk_ms, others))
        p.opened = True
        self._broadcast(Event(EventType.PARTICIPANT_JOINED, participant=p.info), exclude=p.id)

    def _replace(self, old: Participant) -> None:
        self._remove(old)
        old.deliver(Event(EventType.REPLACED, participant=old.info, reason="taken over"))
        old.close(CloseCode.ABORTED, "replaced by a newer connection that joined with takeover")

    def _remove(self, p: Participant) -> None:
        self.participants.pop(p.id, None)
        if self.agent is p:
            self.agent = None
        self._cancel(f"wait:{p.id}")

    async def _activate(self) -> None:
        """The AI side is ready and a USER is here: ACTIVE, then `opened` to waiting users."""
        if self.session.state in (SessionState.CREATED, SessionState.PAUSED):
            self.session = await self.hub.manager.apply(self.session_id, SessionEvent.JOIN)
        if self.session.state != SessionState.ACTIVE:
            return
        self._schedule_expiry()
        for u in self.users:
            if not u.opened:
                self._cancel(f"wait:{u.id}")
                self._open(u)

    async def leave(self, p: Participant, reason: str = "") -> None:
        """Removes `p` (its stream ended or it said leave); pauses when the last USER is gone."""
        async with self.lock:
            if self.participants.get(p.id) is not p:
                return
            self._remove(p)
            if p.opened:
                self._broadcast(
                    Event(EventType.PARTICIPANT_LEFT, participant=p.info, reason=reason)
                )
            if p.role == Role.USER and not self.users:
                if self.reply is not None and not self.reply.ended:
                    await self._cut_reply(self.reply, self.reply.played_ms, notify=False)
                if self.session.state == SessionState.ACTIVE:
                    self._schedule_pause()
            self.hub.forget_if_idle(self)

    def _start_agent_wait(self, p: Participant) -> None:
        timeout = self.hub.settings.agent_wait_timeout_ms / 1000

        def expire() -> None:
            if self.participants.get(p.id) is p and not p.opened:
                self._remove(p)
                p.close(CloseCode.UNAVAILABLE, f"no AGENT joined within {timeout:g}s")
                self.hub.forget_if_idle(self)

        self._timers[f"wait:{p.id}"] = asyncio.get_running_loop().call_later(timeout, expire)

    # -- lifecycle timers ---------------------------------------------------------------------

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _cancel_all(self) -> None:
        for name in list(self._timers):
            self._cancel(name)

    def _schedule_pause(self) -> None:
        async def pause_later() -> None:
            await asyncio.sleep(self.hub.settings.pause_grace_ms / 1000)
            async with self.lock:
                self._timers.pop("pause", None)
                if not self.users and self.session.state == SessionState.ACTIVE:
                    with contextlib.suppress(FailedPrecondition):  # ended or paused meanwhile
                        self.session = await self.hub.manager.apply(
                            self.session_id, SessionEvent.LEAVE
                        )
            self.hub.forget_if_idle(self)

        self._cancel("pause")
        self._timers["pause"] = asyncio.create_task(pause_later())

    def _schedule_expiry(self) -> None:
        now = self.hub.manager.now_ms()
        remaining = max(0, self.session.max_duration_ms - self.session.duration_at(now))
        lead = self.hub.settings.expiring_lead_ms
        loop = asyncio.get_running_loop()
        self._cancel("expiring")
        self._cancel("expire")

        def warn() -> None:
            left = max(
                0,
                self.session.max_duration_ms - self.session.duration_at(self.hub.manager.now_ms()),
            )
            self._broadcast(Event(EventType.SESSION_EXPIRING, time_left_ms=left))

        self._timers["expiring"] = loop.call_later(max(0.0, (remaining - lead) / 1000), warn)

        async def expire() -> None:
            await asyncio.sleep(remaining / 1000)
            self._timers.pop("expire", None)
            with contextlib.suppress(FailedPrecondition):
                await self.hub.manager.apply(
                    self.session_id, SessionEvent.EXPIRE, end_reason=EndReason.MAX_DURATION
                )

        self._timers["expire"] = asyncio.create_task(expire())

    def on_transition(self, session: Session, step: Transition) -> None:
        """Called by the hub after any committed state change of this session."""
        self.session = session
        if step.target == SessionState.PAUSED:
            self._cancel("expiring")
            self._cancel("expire")
            if self.reply is not None and not self.reply.ended:
                self._finish_later(self.reply)
            self._broadcast(Event(EventType.SESSION_PAUSED, reason=step.event.value))
            for u in self.users:
                self._remove(u)
                u.close(CloseCode.OK, "session paused")
            self._detach_builtin("session paused")
        elif step.target.ended:
            self._cancel_all()
            self._broadcast(
                Event(
                    EventType.SESSION_ENDED,
                    reason=step.event.value,
                    state=step.target,
                    end_reason=session.end_reason,
                )
            )
            for p in list(self.participants.values()):
                self._remove(p)
                p.close(CloseCode.OK, f"session {step.target.value}")
            self.closed = True

    def shutdown(self, reason: str) -> None:
        self._cancel_all()
        for p in list(self.participants.values()):
            self._remove(p)
            p.close(CloseCode.UNAVAILABLE, reason)
        self.closed = True

    # -- routing ------------------------------------------------------------------------------

    def _broadcast(self, frame: OutFrame, exclude: str = "") -> None:
        for p in self.participants.values():
            if p.opened and p.id != exclude:
                p.deliver(frame)

    def _to_roles(self, frame: OutFrame, roles: Iterable[Role], exclude: str = "") -> None:
        wanted = set(roles)
        for p in self.participants.values():
            if p.opened and p.role in wanted and p.id != exclude:
                p.deliver(frame)

    def _error(self, p: Participant, message: str, field: str = "", code: int = 3) -> None:
        p.deliver(StreamError(code, message, field))

    async def receive(self, p: Participant, frame: i.InFrame) -> None:
        """Routes what `p` sent. Mistakes answer `p` with a StreamError and change nothing."""
        if isinstance(frame, i.LeaveIn):
            await self.leave(p, frame.reason)
            p.close(CloseCode.OK, "left")
            return
        if not p.opened or self.participants.get(p.id) is not p:
            self._error(p, "not open yet: wait for `opened`", code=_FAILED_PRECONDITION)
            return
        if p.role == Role.USER:
            await self._from_user(p, frame)
        elif p.role == Role.AGENT:
            await self._from_agent(p, frame)
        else:
            self._error(p, "an OBSERVER can only send `leave`", code=_FAILED_PRECONDITION)

    def _check_pcm(self, p: Participant, pcm: bytes, field: str, rate: int = 0) -> bool:
        if len(pcm) % 2:
            self._error(p, "PCM16 audio must have an even number of bytes", field)
            return False
        rate = rate or p.sample_rate
        limit = rate * min(p.chunk_ms, 1000) // 1000 * 2
        if len(pcm) > limit:
            self._error(
                p,
                f"chunk of {len(pcm)} bytes is longer than the declared {min(p.chunk_ms, 1000)} "
                f"ms ({limit} bytes at {rate} Hz)",
                field,
            )
            return False
        return True

    def _check_text(self, p: Participant, text: str, field: str) -> bool:
        if not text.strip():
            self._error(p, "text must not be empty", field)
            return False
        if len(text) > TEXT_MAX_CHARS:
            self._error(p, f"text is {len(text)} characters; the limit is {TEXT_MAX_CHARS}", field)
            return False
        return True

    async def _from_user(self, p: Participant, frame: i.InFrame) -> None:
        if isinstance(frame, i.AudioIn):
            if self._check_pcm(p, frame.pcm, "audio.pcm") and frame.pcm:
                out = Audio(frame.pcm, p.sample_rate, p.id, source_sequence=frame.sequence)
                self._to_roles(out, (Role.AGENT, Role.OBSERVER), exclude=p.id)
        elif isinstance(frame, i.TextIn):
            if self._check_text(p, frame.text, "text.text"):
                await self._store(MessageRole.USER, frame.text, "")
                self._to_roles(
                    Text(frame.text, p.id, Role.USER), (Role.AGENT, Role.OBSERVER), exclude=p.id
                )
        elif isinstance(frame, i.TriggerIn):
            if not _TRIGGER_NAME.match(frame.name):
                self._error(
                    p,
                    "trigger name must be lowercase letters, digits and _.:- starting with a "
                    "letter, at most 64 characters",
                    "trigger.name",
                )
            elif frame.encoded_size > TRIGGER_PAYLOAD_MAX_BYTES:
                self._error(
                    p,
                    f"payload is {frame.encoded_size} bytes; the limit is "
                    f"{TRIGGER_PAYLOAD_MAX_BYTES}",
                    "trigger.payload",
                )
            else:
                out_t = TriggerOut(frame.name, frame.payload, p.id)
                self._to_roles(out_t, (Role.AGENT, Role.OBSERVER), exclude=p.id)
        elif isinstance(frame, i.ContextIn):
            await self._apply_context(p, frame)
        elif isinstance(frame, i.PlaybackMarkIn):
            reply = self._reply_for(frame.interaction_id)
            if reply is not None:
                reply.played_ms = max(reply.played_ms, frame.played_ms)
        elif isinstance(frame, i.InterruptIn):
            await self._interrupt(frame)
        elif isinstance(frame, i.EndOfTurnIn):
            self._to_roles(
                Event(EventType.SPEECH_STOPPED, participant=p.info, reason="end_of_turn"),
                (Role.AGENT, Role.OBSERVER),
            )
        else:
            self._error(
                p, f"{type(frame).__name__} is for the AGENT only", code=_FAILED_PRECONDITION
            )

    async def _from_agent(self, p: Participant, frame: i.InFrame) -> None:
        if isinstance(frame, i.ReplyStartIn):
            if len(frame.interaction_id) > INTERACTION_ID_MAX_CHARS:
                self._error(p, "interaction_id is longer than 64 characters", "reply_start")
                return
            await self._start_reply(p, frame.interaction_id)
        elif isinstance(frame, i.ReplyAudioIn | i.AudioIn):
            implicit = self._implicit(frame)
            rate = getattr(frame, "sample_rate", None) or p.sample_rate
            if not self._check_pcm(p, frame.pcm, "reply_audio.pcm", rate) or not frame.pcm:
                return
            reply = await self._reply_of(p, implicit, getattr(frame, "interaction_id", ""))
            if reply is None:
                return
            if not reply.interrupted:
                out = Audio(frame.pcm, rate, p.id, reply.interaction_id, int(reply.audio_ms))
                reply.audio_ms += len(frame.pcm) / 2 / rate * 1000
                self._to_roles(out, (Role.USER, Role.OBSERVER))
            if implicit:
                await self._end_reply(reply)
        elif isinstance(frame, i.ReplyTextIn | i.TextIn):
            implicit = self._implicit(frame)
            if not self._check_text(p, frame.text, "reply_text.text"):
                return
            reply = await self._reply_of(p, implicit, getattr(frame, "interaction_id", ""))
            if reply is None:
                return
            offset = getattr(frame, "offset_ms", None)
            at = int(reply.audio_ms) if offset is None else max(0, offset)
            if not reply.interrupted:
                reply.parts.append((at, frame.text))
                if not implicit:
                    self._to_roles(
                        Text(frame.text, p.id, Role.AGENT, False, reply.interaction_id, at),
                        (Role.USER, Role.OBSERVER),
                    )
            if implicit:
                await self._end_reply(reply)
        elif isinstance(frame, i.ReplyVisemesIn):
            reply = await self._reply_of(p, False, frame.interaction_id)
            if reply is not None and not reply.interrupted:
                self._to_roles(
                    Visemes(reply.interaction_id, frame.visemes), (Role.USER, Role.OBSERVER)
                )
        elif isinstance(frame, i.ReplyEndIn):
            reply = self._reply_for(frame.interaction_id)
            if reply is None or reply.ended:
                self._error(p, "no reply in flight to end", "reply_end", _FAILED_PRECONDITION)
                return
            await self._end_reply(reply)
        elif isinstance(frame, i.ReplyVideoIn):
            reply = self._reply_for(frame.interaction_id) if frame.interaction_id else None
            if reply is None or not reply.interrupted:
                video = Video(
                    frame.image,
                    frame.mime_type,
                    frame.width,
                    frame.height,
                    frame.interaction_id,
                    frame.offset_ms,
                )
                self._to_roles(video, (Role.USER, Role.OBSERVER))
        elif isinstance(frame, i.ReplyCancelIn):
            reply = self._reply_for(frame.interaction_id)
            if reply is not None and not reply.ended:
                # What the client reported played wins; the agent's estimate stands in without it.
                played = reply.played_ms or frame.played_ms or 0
                await self._cut_reply(reply, played, notify=True)
        elif isinstance(frame, i.TranscriptIn):
            await self._user_transcript(frame)
        elif isinstance(frame, i.SpeechIn):
            user = self.users[0].info if self.users else None
            kind = EventType.SPEECH_STARTED if frame.started else EventType.SPEECH_STOPPED
            self._to_roles(Event(kind, participant=user), (Role.USER, Role.OBSERVER))
        elif isinstance(frame, i.ContextIn):
            await self._apply_context(p, frame)
        else:
            self._error(p, f"{type(frame).__name__} is for a USER only", code=_FAILED_PRECONDITION)

    async def _user_transcript(self, frame: i.TranscriptIn) -> None:
        """The agent recognised the user's speech: final text enters the history, then is shown."""
        if not frame.text.strip() or len(frame.text) > TEXT_MAX_CHARS:
            return
        user = self.users[0] if self.users else None
        if frame.is_final:
            await self._store(MessageRole.USER, frame.text, "")
        self._to_roles(
            Transcript(
                frame.text,
                user.id if user else "",
                user.speaker_id if user else "",
                frame.is_final,
            ),
            (Role.USER, Role.OBSERVER),
        )

    # -- replies ------------------------------------------------------------------------------

    def _implicit(self, frame: i.InFrame) -> bool:
        """AGENT `audio`/`text` outside a reply lifecycle is a complete reply of its own."""
        if isinstance(frame, i.AudioIn | i.TextIn):
            return self.reply is None or self.reply.ended
        return False

    def _reply_for(self, interaction_id: str) -> Reply | None:
        if not interaction_id:
            return self.reply
        if self.reply is not None and self.reply.interaction_id == interaction_id:
            return self.reply
        return self._finished.get(interaction_id)

    async def _reply_of(
        self, agent: Participant, implicit: bool, interaction_id: str = ""
    ) -> Reply | None:
        if implicit:
            return await self._start_reply(agent, "")
        reply = self._reply_for(interaction_id)
        if reply is None or reply.ended:
            # Media for a reply that was never started: start it, so a simple agent still works.
            return await self._start_reply(agent, interaction_id)
        return reply

    async def _start_reply(self, agent: Participant, interaction_id: str) -> Reply:
        if self.reply is not None and not self.reply.ended:
            await self._end_reply(self.reply)
        reply = Reply(interaction_id or new_interaction_id(), agent.sample_rate)
        self.reply = reply
        self._broadcast(Event(EventType.RESPONSE_STARTED, interaction_id=reply.interaction_id))
        return reply

    async def _end_reply(self, reply: Reply) -> None:
        if reply.ended:
            return
        reply.ended = True
        self._remember(reply)
        if reply.interrupted:
            return
        text = reply.text().strip()
        if text:
            # Stored before anyone is told the reply is done.
            await self._store(MessageRole.AGENT, text, reply.interaction_id)
            self._to_roles(
                Text(
                    text,
                    self.agent.id if self.agent else "",
                    Role.AGENT,
                    True,
                    reply.interaction_id,
                    int(reply.audio_ms),
                ),
                (Role.USER, Role.OBSERVER),
            )
        self._broadcast(Event(EventType.RESPONSE_DONE, interaction_id=reply.interaction_id))

    def _remember(self, reply: Reply) -> None:
        self._finished[reply.interaction_id] = reply
        while len(self._finished) > 16:
            self._finished.pop(next(iter(self._finished)))

    async def _interrupt(self, frame: i.InterruptIn) -> None:
        reply = self._reply_for(frame.interaction_id)
        if reply is None or reply.ended or reply.interrupted:
            return
        played = frame.played_ms if frame.played_ms is not None else reply.played_ms
        await self._cut_reply(reply, played, notify=True)

    async def _cut_reply(self, reply: Reply, played_ms: int, *, notify: bool) -> None:
        """Barge-in: no more of the reply goes out; history keeps only what was played."""
        reply.interrupted = True
        reply.played_ms = max(0, played_ms)
        reply.ended = True
        self._remember(reply)
        heard = reply.played_text(reply.played_ms)
        if heard.strip():
            await self._store(MessageRole.AGENT, heard, reply.interaction_id, interrupted=True)
        if notify:
            self._broadcast(Event(EventType.INTERRUPTED, interaction_id=reply.interaction_id))

    def _finish_later(self, reply: Reply) -> None:
        task = asyncio.create_task(self._cut_reply(reply, reply.played_ms, notify=False))
        self._timers[f"cut:{reply.interaction_id}"] = task

    # -- persistence --------------------------------------------------------------------------

    async def _store(
        self, role: MessageRole, text: str, interaction_id: str, *, interrupted: bool = False
    ) -> None:
        await self.hub.manager.repo.append_message(
            self.session_id,
            role=role,
            text=text,
            interaction_id=interaction_id,
            now_ms=self.hub.manager.now_ms(),
            interrupted=interrupted,
        )

    async def _apply_context(self, p: Participant, frame: i.ContextIn) -> None:
        try:
            self.session = await self.hub.manager.update_context(
                self.session_id, dynamic_info=frame.dynamic_info, scene=frame.scene
            )
        except Exception as exc:  # a caller mistake (over-long text, ...) or an ended session
            message = getattr(exc, "message", None) or str(exc)
            self._error(p, message, "context_update")
            return
        self._to_roles(ContextChanged(frame.dynamic_info, frame.scene), (Role.AGENT, Role.OBSERVER))
