"""A room: the live side of one session — who is in it, its lifecycle timers, and routing.

Joins, leaves and the pause after the last USER run under the room's lock; a committed state
change (pause, end, expiry) reaches the room through `on_transition`, which does not await, so
it needs none. Frame routing does not wait on the lock: `deliver` never blocks, so one slow
participant never stalls others.
The parts: `Members` (who is here, delivery), `Router` (one handler per frame type), `Replies`
(the AI reply in flight and barge-in cuts), `SessionRecord` (the stored session, every write),
`Timers` (pause grace, agent wait, expiry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from parleyd.domain.errors import AlreadyExists, FailedPrecondition, Unavailable
from parleyd.domain.lifecycle import (
    EndReason,
    SessionEvent,
    SessionState,
    Transition,
    ensure_joinable,
)
from parleyd.domain.session import AgentMode, Message, Session
from parleyd.live import checks
from parleyd.live import inputs as i
from parleyd.live.agent_link import AgentFactory
from parleyd.live.frames import CloseCode, Event, EventType, Role
from parleyd.live.members import Members
from parleyd.live.participant import Participant
from parleyd.live.record import SessionRecord
from parleyd.live.replies import Replies
from parleyd.live.routing import Router
from parleyd.live.session_port import SessionPort
from parleyd.live.settings import LiveSettings
from parleyd.live.timers import Timers

log = logging.getLogger("parleyd.live")

_PAUSE = "pause"
_EXPIRING = "expiring"
_EXPIRE = "expire"


class Room:
    def __init__(
        self,
        session: Session,
        sessions: SessionPort,
        settings: LiveSettings,
        *,
        agent_factory: AgentFactory | None = None,
        on_idle: Callable[[Room], None] = lambda room: None,
    ) -> None:
        self.session_id = session.id
        self.record = SessionRecord(sessions, session)
        self.members = Members(session.id)
        self.replies = Replies(self.members, self.record)
        self._router = Router(self.members, self.replies, self.record)
        self._timers = Timers()
        self._settings = settings
        self._agent_factory = agent_factory
        self._on_idle = on_idle
        self.lock = asyncio.Lock()
        self.closed = False

    @property
    def session(self) -> Session:
        return self.record.session

    @property
    def idle(self) -> bool:
        """Nobody is here and nothing is left to do (a pending pause still has work)."""
        return not self.members and _PAUSE not in self._timers

    def close(self) -> None:
        """Stops every timer; the hub forgets the room."""
        self._timers.cancel_all()
        self.closed = True

    # -- membership ---------------------------------------------------------------------------

    async def join(self, p: Participant, *, takeover: bool) -> None:
        """Adds `p`; raises AlreadyExists / FailedPrecondition and changes nothing when refused."""
        async with self.lock:
            session = await self.record.refresh()
            ensure_joinable(session.state)
            if p.role == Role.AGENT:
                await self._join_agent(p, takeover)
            elif p.role == Role.USER:
                await self._join_user(p, takeover)
            else:
                self.members.add(p)
                self.members.open(p)

    async def _join_agent(self, p: Participant, takeover: bool) -> None:
        if self.session.agent_mode != AgentMode.EXTERNAL:
            raise FailedPrecondition(
                "this session's agent_mode is BUILTIN: the built-in engine is its AI; create the "
                "session with agent_mode AGENT_MODE_EXTERNAL to attach your own AGENT"
            )
        if self.members.agent is not None:
            if not takeover:
                raise AlreadyExists(
                    "this session already has an AGENT; join with takeover to replace it"
                )
            self._replace(self.members.agent)
        self.members.add(p)
        self.members.open(p)
        if self.members.users:
            await self._activate()

    async def _join_user(self, p: Participant, takeover: bool) -> None:
        if self.session.agent_mode == AgentMode.BUILTIN and self._agent_factory is None:
            raise FailedPrecondition(
                "the built-in AI engine is not available on this server (it runs with --engine "
                "off, or a speech component is missing: see its log); create the session with "
                "agent_mode AGENT_MODE_EXTERNAL and attach your own AGENT"
            )
        current = self.members.users
        if len(current) >= self._settings.max_users:
            if not takeover:
                raise AlreadyExists(
                    "this session already has a USER connected; join with takeover to replace it"
                )
            self._replace(current[0])
        self._timers.cancel(_PAUSE)
        self.members.add(p)
        if self.session.agent_mode == AgentMode.BUILTIN and self.members.agent is None:
            self._attach_builtin()
        if self.members.agent is not None:
            await self._activate()
        else:
            self._wait_for_agent(p)

    def _attach_builtin(self) -> None:
        """The built-in engine joins as this room's AGENT (it leaves again when the room pauses)."""
        assert self._agent_factory is not None
        engine = self._agent_factory(_RoomLink(self))
        self.members.add(engine)
        self.members.open(engine)
        engine.start()

    def _detach_builtin(self, reason: str) -> None:
        engine = self.members.agent
        if self.session.agent_mode == AgentMode.BUILTIN and engine is not None:
            self._remove(engine)
            engine.close(CloseCode.OK, reason)

    def _replace(self, old: Participant) -> None:
        self._remove(old)
        old.deliver(Event(EventType.REPLACED, participant=old.info, reason="taken over"))
        old.close(CloseCode.ABORTED, "replaced by a newer connection that joined with takeover")

    def _remove(self, p: Participant) -> None:
        self.members.remove(p)
        self._timers.cancel(f"wait:{p.id}")

    async def _activate(self) -> None:
        """The AI side is ready and a USER is here: ACTIVE, then `opened` to waiting users."""
        if self.session.state in (SessionState.CREATED, SessionState.PAUSED):
            await self.record.apply(SessionEvent.JOIN)
        if self.session.state != SessionState.ACTIVE:
            return
        self._schedule_expiry()
        for u in self.members.users:
            if not u.opened:
                self._timers.cancel(f"wait:{u.id}")
                self.members.open(u)

    async def leave(self, p: Participant, reason: str = "") -> None:
        """Removes `p` (its stream ended or it said leave); pauses when the last USER is gone."""
        async with self.lock:
            if not self.members.has(p):
                return
            was_agent = self.members.agent is p
            self._remove(p)
            if was_agent and (reply := self.replies.in_flight) is not None:
                # Nobody can finish it now: it ends as cut, at what the user reported played.
                await self.replies.cut(reply, reply.played_ms, notify=True)
            if p.opened:
                self.members.broadcast(
                    Event(EventType.PARTICIPANT_LEFT, participant=p.info, reason=reason)
                )
            if p.role == Role.USER and not self.members.users:
                if (reply := self.replies.in_flight) is not None:
                    await self.replies.cut(reply, reply.played_ms, notify=False)
                if self.session.state == SessionState.ACTIVE:
                    self._schedule_pause(left_at_ms=self.record.now_ms())
            self._on_idle(self)

    def _wait_for_agent(self, p: Participant) -> None:
        timeout = self._settings.agent_wait_timeout_ms / 1000

        def give_up() -> None:
            if self.members.has(p) and not p.opened:
                self._remove(p)
                p.close(CloseCode.UNAVAILABLE, f"no AGENT joined within {timeout:g}s")
                self._on_idle(self)

        self._timers.call_later(f"wait:{p.id}", timeout, give_up)

    # -- lifecycle timers ---------------------------------------------------------------------

    def _schedule_pause(self, *, left_at_ms: int) -> None:
        """PAUSED after the grace, unless a USER comes back; the grace itself is not billed:
        interaction time ends when the last USER left."""

        async def pause_later() -> None:
            await asyncio.sleep(self._settings.pause_grace_ms / 1000)
            async with self.lock:
                self._timers.done(_PAUSE)
                if not self.members.users and self.session.state == SessionState.ACTIVE:
                    try:
                        await self.record.apply(SessionEvent.LEAVE, active_until_ms=left_at_ms)
                    except FailedPrecondition:  # ended or paused meanwhile
                        pass
                    except Unavailable:  # the database is away: try again, billing unchanged
                        log.warning("could not pause %s yet: database unavailable", self.session_id)
                        self._schedule_pause(left_at_ms=left_at_ms)
            self._on_idle(self)

        self._timers.spawn(_PAUSE, pause_later())

    def _schedule_expiry(self) -> None:
        remaining = self.record.remaining_ms()

        def warn() -> None:
            left = self.record.remaining_ms()
            self.members.broadcast(Event(EventType.SESSION_EXPIRING, time_left_ms=left))

        lead = self._settings.expiring_lead_ms
        self._timers.call_later(_EXPIRING, (remaining - lead) / 1000, warn)

        async def expire() -> None:
            await asyncio.sleep(remaining / 1000)
            # Forgotten before the transition: ending the room cancels every pending timer.
            self._timers.done(_EXPIRE)
            with contextlib.suppress(FailedPrecondition):
                await self.record.apply(SessionEvent.EXPIRE, end_reason=EndReason.MAX_DURATION)

        self._timers.spawn(_EXPIRE, expire())

    def on_transition(self, session: Session, step: Transition) -> None:
        """Called by the hub after any committed state change of this session."""
        self.record.session = session
        if step.target == SessionState.PAUSED:
            self._timers.cancel(_EXPIRING)
            self._timers.cancel(_EXPIRE)
            if (reply := self.replies.in_flight) is not None:
                work = self.replies.cut(reply, reply.played_ms, notify=False)
                self._timers.spawn(f"cut:{reply.interaction_id}", work)
            self.members.broadcast(Event(EventType.SESSION_PAUSED, reason=step.event.value))
            for u in self.members.users:
                self._remove(u)
                u.close(CloseCode.OK, "session paused")
            self._detach_builtin("session paused")
        elif step.target.ended:
            self._timers.cancel_all()
            self.members.broadcast(
                Event(
                    EventType.SESSION_ENDED,
                    reason=step.event.value,
                    state=step.target,
                    end_reason=session.end_reason,
                )
            )
            for p in self.members.all():
                self._remove(p)
                p.close(CloseCode.OK, f"session {step.target.value}")
            self.closed = True

    async def evict(self, code: CloseCode, reason: str) -> None:
        """Ends every participant's stream with `code` and pauses the session at once (no grace:
        nobody may come back)."""
        async with self.lock:
            self._timers.cancel(_PAUSE)
            for p in self.members.all():
                self._remove(p)
                p.close(code, reason)
            if self.session.state == SessionState.ACTIVE:
                with contextlib.suppress(FailedPrecondition):  # ended or paused meanwhile
                    await self.record.apply(SessionEvent.LEAVE)
        self._on_idle(self)

    def shutdown(self, reason: str) -> None:
        self._timers.cancel_all()
        for p in self.members.all():
            self._remove(p)
            p.close(CloseCode.UNAVAILABLE, reason)
        self.closed = True

    # -- frames -------------------------------------------------------------------------------

    async def receive(self, p: Participant, frame: i.InFrame) -> None:
        """Routes what `p` sent. Mistakes answer `p` with a StreamError and change nothing."""
        if isinstance(frame, i.LeaveIn):
            await self.leave(p, frame.reason)
            p.close(CloseCode.OK, "left")
            return
        if not p.opened or not self.members.has(p):
            p.deliver(checks.refused("not open yet: wait for `opened`"))
            return
        await self._router.route(p, frame)


class _RoomLink:
    """The room as its built-in AI participant sees it (`live.AgentLink`)."""

    def __init__(self, room: Room) -> None:
        self._room = room

    @property
    def session(self) -> Session:
        return self._room.session

    def user_sample_rate(self) -> int | None:
        users = self._room.members.users
        return users[0].sample_rate if users else None

    def user_chunk_ms(self) -> int | None:
        users = self._room.members.users
        return users[0].chunk_ms if users else None

    async def send(self, sender: Participant, frame: i.InFrame) -> None:
        await self._room.receive(sender, frame)

    async def load_history(self, *, last: int) -> list[Message]:
        return await self._room.record.sessions.load_history(self._room.session_id, last=last)

    async def set_summary(self, summary: str) -> None:
        record = self._room.record
        record.session = await record.sessions.set_summary(self._room.session_id, summary)
