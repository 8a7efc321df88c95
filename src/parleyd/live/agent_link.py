"""What a room offers the built-in AI participant it starts for itself (`engine.BuiltinAgent`).

The engine sees its session, sends frames into the room like any transport, and reads and writes
what an AI needs (the history, a summary) — through the room, never the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from parleyd.domain.session import Message, Session
from parleyd.live import inputs as i
from parleyd.live.participant import Participant


class AgentLink(Protocol):
    @property
    def session(self) -> Session:
        """The session as the room last saw it (context updates included)."""
        ...

    def user_sample_rate(self) -> int | None:
        """The rate of the first USER's audio, None with no USER here."""
        ...

    def user_chunk_ms(self) -> int | None:
        """The chunk length the first USER declared, None with no USER here: the engine sends its
        reply audio in chunks of this length (what that USER's `opened.audio_format` says)."""
        ...

    async def send(self, sender: Participant, frame: i.InFrame) -> None:
        """Into the room, exactly as a transport hands over what its client sent."""
        ...

    async def load_history(self, *, last: int) -> list[Message]: ...

    async def set_summary(self, summary: str) -> None: ...


class BuiltinParticipant(Participant, Protocol):
    def start(self) -> None:
        """Starts its own task; called once it is in the room and opened."""
        ...


# Makes a room's built-in AI participant; None where the engine is off or cannot run.
AgentFactory = Callable[[AgentLink], BuiltinParticipant]
