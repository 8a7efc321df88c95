"""Who is in a room, and delivery of one frame to the members it is for.

Delivery never waits: `Participant.deliver` queues, so fanning a frame out to every member costs
the room one call per member, whatever their connections do.
"""

from __future__ import annotations

import logging

from parleyd.live.frames import Event, EventType, Opened, OutFrame, Role
from parleyd.live.participant import Participant

log = logging.getLogger("parleyd.live")

TO_AI = frozenset({Role.AGENT, Role.OBSERVER})  # who hears what users say
TO_PEOPLE = frozenset({Role.USER, Role.OBSERVER})  # who hears what the AI says


class Members:
    def __init__(self, session_id: str) -> None:
        self._session_id = session_id
        self._by_id: dict[str, Participant] = {}
        self.agent: Participant | None = None

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def all(self) -> list[Participant]:
        return list(self._by_id.values())

    def has(self, p: Participant) -> bool:
        return self._by_id.get(p.id) is p

    @property
    def users(self) -> list[Participant]:
        return [p for p in self._by_id.values() if p.role == Role.USER]

    def add(self, p: Participant) -> None:
        self._by_id[p.id] = p
        if p.role == Role.AGENT:
            self.agent = p
        log.info(
            "participant joined",
            extra={"session_id": self._session_id, "participant": p.id, "role": p.role.value},
        )

    def remove(self, p: Participant) -> None:
        self._by_id.pop(p.id, None)
        if self.agent is p:
            self.agent = None

    def open(self, p: Participant) -> None:
        """Tells `p` the session is open for it (with who else is here), and the others of `p`."""
        others = tuple(o.info for o in self._by_id.values() if o.id != p.id and o.opened)
        p.deliver(Opened(p.info, p.sample_rate, p.chunk_ms, others))
        p.opened = True
        self.broadcast(Event(EventType.PARTICIPANT_JOINED, participant=p.info), exclude=p.id)

    def broadcast(self, frame: OutFrame, exclude: str = "") -> None:
        for p in self._by_id.values():
            if p.opened and p.id != exclude:
                p.deliver(frame)

    def send_to(self, frame: OutFrame, roles: frozenset[Role], exclude: str = "") -> None:
        for p in self._by_id.values():
            if p.opened and p.role in roles and p.id != exclude:
                p.deliver(frame)
