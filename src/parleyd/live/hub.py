"""The hub: the live rooms of one server process, and their link to the session manager.

It hears every committed state change from the manager (DisconnectSession, TerminateSession,
expiry) and tells the room; it keeps usage of live sessions current with heartbeats; and on start
it pauses sessions that a dead process left ACTIVE, counting their usage to the last heartbeat.

One process owns the live side of its sessions: recovery assumes no other parleyd process serves
the same database's live sessions at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from parleyd.domain.lifecycle import SessionEvent, SessionState, Transition
from parleyd.domain.session import Session
from parleyd.live.participant import Participant
from parleyd.live.room import Room
from parleyd.manager import SessionManager

log = logging.getLogger("parleyd.live")


@dataclass(frozen=True, slots=True)
class LiveSettings:
    max_users: int = 1
    outbox_capacity: int = 256
    pause_grace_ms: int = 500
    agent_wait_timeout_ms: int = 30_000
    expiring_lead_ms: int = 30_000
    heartbeat_interval_ms: int = 2_000


class Hub:
    def __init__(self, manager: SessionManager, settings: LiveSettings | None = None) -> None:
        self.manager = manager
        self.settings = settings or LiveSettings()
        self.rooms: dict[str, Room] = {}
        # Makes the built-in AI participant of a room (engine.factory); None: not available.
        self.agent_factory: Callable[[Room], Participant] | None = None
        manager.on_transition(self._on_transition)

    @property
    def builtin_engine_available(self) -> bool:
        return self.agent_factory is not None

    def room_for(self, session: Session) -> Room:
        room = self.rooms.get(session.id)
        if room is None or room.closed:
            room = self.rooms[session.id] = Room(self, session)
        return room

    def forget_if_idle(self, room: Room) -> None:
        """Drops a room with nobody in it that has nothing left to do."""
        if room.participants or "pause" in room._timers:
            return
        if self.rooms.get(room.session_id) is room:
            room._cancel_all()
            del self.rooms[room.session_id]

    async def _on_transition(self, session: Session, step: Transition) -> None:
        room = self.rooms.get(session.id)
        if room is None:
            return
        room.on_transition(session, step)
        if room.closed or not room.participants:
            self.forget_if_idle(room)
            if room.closed:
                self.rooms.pop(session.id, None)

    async def recover(self) -> list[str]:
        """Pauses sessions a dead process left ACTIVE; usage counts to their last heartbeat."""
        recovered = []
        for s in await self.manager.repo.sessions_in_state(SessionState.ACTIVE):
            if s.id in self.rooms:
                continue
            last = await self.manager.repo.last_heartbeat_ms(s.id)
            try:
                await self.manager.apply(
                    s.id, SessionEvent.LEAVE, active_until_ms=last or s.active_since_ms
                )
                recovered.append(s.id)
            except Exception:
                log.exception("could not recover session %s", s.id)
        if recovered:
            log.info("paused sessions a previous process left ACTIVE", extra={"n": len(recovered)})
        return recovered

    async def heartbeat_once(self) -> None:
        live = [sid for sid, r in self.rooms.items() if r.session.state == SessionState.ACTIVE]
        await self.manager.repo.heartbeat(live, self.manager.now_ms())

    async def run_heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.heartbeat_once()
            except Exception:
                log.exception("heartbeat failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.heartbeat_interval_ms / 1000)

    async def shutdown(self) -> None:
        """Server drain: pause every live session exactly now, then close every stream."""
        for room in list(self.rooms.values()):
            if room.session.state == SessionState.ACTIVE:
                with contextlib.suppress(Exception):
                    await self.manager.apply(room.session_id, SessionEvent.LEAVE)
            room.shutdown("server is shutting down; join again to resume")
        self.rooms.clear()
