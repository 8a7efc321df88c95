"""The hub: the live rooms of one server process, and their link to stored sessions.

It hears every committed state change through the `SessionPort` (DisconnectSession,
TerminateSession, expiry) and tells the room; it keeps usage of live sessions current with
heartbeats; and on start it pauses sessions that a dead process left ACTIVE, counting their usage
to the last heartbeat.

One process owns the live side of its sessions: recovery assumes no other parleyd process serves
the same database's live sessions at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from parleyd._periodic import every
from parleyd.domain.lifecycle import SessionEvent, SessionState, Transition
from parleyd.domain.session import Session
from parleyd.live.agent_link import AgentFactory
from parleyd.live.frames import CloseCode
from parleyd.live.room import Room
from parleyd.live.session_port import SessionPort
from parleyd.live.settings import LiveSettings

log = logging.getLogger("parleyd.live")


class Hub:
    def __init__(
        self,
        sessions: SessionPort,
        settings: LiveSettings | None = None,
        *,
        agent_factory: AgentFactory | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings or LiveSettings()
        self.rooms: dict[str, Room] = {}
        self._agent_factory = agent_factory
        sessions.on_transition(self._on_transition)
        sessions.on_key_revoked(self._on_key_revoked)

    def room_for(self, session: Session) -> Room:
        room = self.rooms.get(session.id)
        if room is None or room.closed:
            room = self.rooms[session.id] = Room(
                session,
                self.sessions,
                self.settings,
                agent_factory=self._agent_factory,
                on_idle=self.forget_if_idle,
            )
        return room

    def forget_if_idle(self, room: Room) -> None:
        """Drops a room with nobody in it that has nothing left to do."""
        if room.idle and self.rooms.get(room.session_id) is room:
            room.close()
            del self.rooms[room.session_id]

    async def _on_transition(self, session: Session, step: Transition) -> None:
        room = self.rooms.get(session.id)
        if room is None:
            return
        room.on_transition(session, step)
        if room.closed:
            self.rooms.pop(session.id, None)
        else:
            self.forget_if_idle(room)

    async def _on_key_revoked(self, key_id: str) -> None:
        """Every live stream of the key's sessions ends now; they pause (metering stops)."""
        for room in [r for r in self.rooms.values() if r.session.api_key_id == key_id]:
            await room.evict(
                CloseCode.UNAUTHENTICATED, "the API key that created this session was revoked"
            )

    async def recover(self) -> list[str]:
        """Pauses sessions a dead process left ACTIVE; usage counts to their last heartbeat."""
        return await self.sessions.recover_orphans(live=self.rooms.keys())

    async def heartbeat_once(self) -> None:
        live = [sid for sid, r in self.rooms.items() if r.session.state == SessionState.ACTIVE]
        await self.sessions.heartbeat(live)

    async def run_heartbeat(self, stop: asyncio.Event) -> None:
        await every(self.settings.heartbeat_interval_ms, stop, self.heartbeat_once, "heartbeat")

    async def shutdown(self) -> None:
        """Server drain: pause every live session exactly now, then close every stream."""
        for room in list(self.rooms.values()):
            if room.session.state == SessionState.ACTIVE:
                with contextlib.suppress(Exception):
                    await self.sessions.apply(room.session_id, SessionEvent.LEAVE)
            room.shutdown("server is shutting down; join again to resume")
        self.rooms.clear()
