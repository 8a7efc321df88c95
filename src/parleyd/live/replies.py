"""Reply tracking: the AI reply in flight, how it starts, ends, and is cut by a barge-in.

The history keeps what the user heard: a reply that ends normally is stored whole; a reply cut
by an interrupt (or by a new message of the user, or by the user leaving) is stored up to what
the client reported as played (`playback_mark` / `interrupt.played_ms`), and marked interrupted.
A cut reply is stored at once, so it comes before the user message that cut it.

When the history cannot be written (the database is out of reach, or its disk is full: the store
raises one of `NOT_STORED`), the stream goes on and nobody waits on the reply:

- `end`: the reply's pieces were already shown as they came, so the people have it; what they
  do not get is the final `Text`, which stands for the stored reply. RESPONSE_DONE is still
  broadcast, the AGENT gets a StreamError (UNAVAILABLE or RESOURCE_EXHAUSTED, on `reply_end`)
  saying the reply is missing from the history, and one WARNING line is logged.
- `cut`: the cut happens all the same (INTERRUPTED is broadcast); the heard part that is missing
  from the history is one WARNING line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from parleyd.domain.errors import ResourceExhausted, Unavailable
from parleyd.domain.ids import new_interaction_id
from parleyd.domain.session import MessageRole
from parleyd.live.frames import Event, EventType, Role, StreamError, Text
from parleyd.live.members import TO_PEOPLE, Members
from parleyd.live.record import SessionRecord

log = logging.getLogger("parleyd.live")

# What the store raises when the history cannot be written right now (nothing of it was written).
NOT_STORED = (Unavailable, ResourceExhausted)
HISTORY_DOWN = "the conversation history cannot be written right now"
REPLY_NOT_STORED = (
    f"reply not stored: {HISTORY_DOWN}; its pieces were shown, it is missing from the history"
)

# Replies that ended are remembered a while: late playback marks and cancels may still name them.
_FINISHED_KEPT = 16


@dataclass(slots=True)
class Reply:
    """One AI reply: its text parts at their audio offsets, and how much of it was played."""

    interaction_id: str
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


class Replies:
    def __init__(self, members: Members, record: SessionRecord) -> None:
        self._members = members
        self._record = record
        self.current: Reply | None = None
        self._finished: dict[str, Reply] = {}

    @property
    def in_flight(self) -> Reply | None:
        reply = self.current
        return reply if reply is not None and not reply.ended else None

    def find(self, interaction_id: str) -> Reply | None:
        """The reply `interaction_id` names; "" names the current one."""
        current = self.current
        if not interaction_id or (current is not None and current.interaction_id == interaction_id):
            return current
        return self._finished.get(interaction_id)

    def mark_played(self, interaction_id: str, played_ms: int) -> None:
        reply = self.find(interaction_id)
        if reply is not None:
            reply.played_ms = max(reply.played_ms, played_ms)

    async def for_media(self, interaction_id: str) -> Reply:
        """The reply media of the AGENT belongs to; media for no open reply starts one, so a
        simple agent that never sends reply_start still works."""
        reply = self.find(interaction_id)
        if interaction_id and reply is not None and reply.interrupted:
            return reply  # the rest of a cut reply, still on its way: dropped, never replayed
        if reply is None or reply.ended:
            return await self.start(interaction_id)
        return reply

    async def start(self, interaction_id: str = "") -> Reply:
        if (previous := self.in_flight) is not None:
            await self.end(previous)
        reply = Reply(interaction_id or new_interaction_id())
        self.current = reply
        self._members.broadcast(
            Event(EventType.RESPONSE_STARTED, interaction_id=reply.interaction_id)
        )
        return reply

    async def end(self, reply: Reply) -> None:
        if reply.ended:
            return
        reply.ended = True
        self._remember(reply)
        if reply.interrupted:
            return
        text = reply.text().strip()
        if text:
            agent = self._members.agent
            try:
                # Stored before anyone is told the reply is done.
                await self._record.append(MessageRole.AGENT, text, reply.interaction_id)
            except NOT_STORED as exc:
                log.warning(
                    "reply %s of %s not stored: %s",
                    reply.interaction_id,
                    self._record.session_id,
                    exc.message,
                )
                if agent is not None:
                    agent.deliver(StreamError(exc.kind, REPLY_NOT_STORED, "reply_end"))
            else:
                final = Text(
                    text,
                    agent.id if agent else "",
                    Role.AGENT,
                    True,
                    reply.interaction_id,
                    int(reply.audio_ms),
                )
                self._members.send_to(final, TO_PEOPLE)
        self._members.broadcast(Event(EventType.RESPONSE_DONE, interaction_id=reply.interaction_id))

    async def interrupt(self, interaction_id: str, played_ms: int | None) -> None:
        """The user's `interrupt`: cut at what it says was played (else its last mark)."""
        reply = self.find(interaction_id)
        if reply is None or reply.ended or reply.interrupted:
            return
        await self.cut(reply, reply.played_ms if played_ms is None else played_ms, notify=True)

    async def cancel(self, interaction_id: str, agent_estimate_ms: int | None) -> None:
        """The AGENT stopped a reply (a barge-in it heard itself)."""
        reply = self.find(interaction_id)
        if reply is not None and not reply.ended:
            # What the client reported played wins; the agent's estimate stands in without it.
            await self.cut(reply, reply.played_ms or agent_estimate_ms or 0, notify=True)

    async def cut(self, reply: Reply, played_ms: int, *, notify: bool) -> None:
        """Barge-in: no more of the reply goes out; history keeps only what was played."""
        reply.interrupted = True
        reply.played_ms = max(0, played_ms)
        reply.ended = True
        self._remember(reply)
        heard = reply.played_text(reply.played_ms)
        if heard.strip():
            try:
                await self._record.append(
                    MessageRole.AGENT, heard, reply.interaction_id, interrupted=True
                )
            except NOT_STORED as exc:
                log.warning(
                    "the heard part of reply %s of %s not stored: %s",
                    reply.interaction_id,
                    self._record.session_id,
                    exc.message,
                )
        if notify:
            self._members.broadcast(
                Event(EventType.INTERRUPTED, interaction_id=reply.interaction_id)
            )

    def _remember(self, reply: Reply) -> None:
        self._finished[reply.interaction_id] = reply
        while len(self._finished) > _FINISHED_KEPT:
            self._finished.pop(next(iter(self._finished)))
