"""The one door from the live side to stored sessions: what rooms, transports and the engine need.

`SessionManager` implements it; the room's unit tests implement it in memory. Nothing on the live
side reaches the repository: every read and write of a live session goes through these calls.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from parleyd.domain.lifecycle import EndReason, SessionEvent
from parleyd.domain.session import (
    KeyRevokedObserver,
    Message,
    MessageRole,
    SceneItem,
    Session,
    TransitionObserver,
)


class SessionPort(Protocol):
    def now_ms(self) -> int:
        """Wall-clock milliseconds, the clock usage and expiry are counted on."""
        ...

    def on_transition(self, observer: TransitionObserver) -> None:
        """`observer` hears of every committed state change, whoever made it."""
        ...

    def on_key_revoked(self, observer: KeyRevokedObserver) -> None:
        """`observer(key_id)` hears of every revoked API key, whoever revoked it."""
        ...

    async def admit(self, session_id: str, access_token: str) -> Session:
        """The session the token opens; Unauthenticated or FailedPrecondition when it cannot."""
        ...

    async def load(self, session_id: str) -> Session:
        """The session as stored now."""
        ...

    async def apply(
        self,
        session_id: str,
        event: SessionEvent,
        *,
        end_reason: EndReason | None = None,
        active_until_ms: int | None = None,
    ) -> Session:
        """Applies a lifecycle event through the transition table; FailedPrecondition if refused."""
        ...

    async def append_message(
        self,
        session_id: str,
        role: MessageRole,
        text: str,
        interaction_id: str,
        *,
        interrupted: bool = False,
    ) -> None:
        """Stores one message of the conversation (committed when this returns)."""
        ...

    async def load_history(self, session_id: str, *, last: int) -> list[Message]:
        """The last `last` messages, oldest first."""
        ...

    async def update_context(
        self,
        session_id: str,
        *,
        dynamic_info: str | None,
        scene: tuple[SceneItem, ...] | None,
    ) -> Session:
        """A live context change, under UpdateSession's rules; InvalidArgument when refused."""
        ...

    async def set_summary(self, session_id: str, summary: str) -> Session:
        """The AI side's summary of the conversation so far."""
        ...

    async def heartbeat(self, session_ids: Sequence[str]) -> None:
        """Usage of these ACTIVE sessions is persisted up to now."""
        ...

    async def recover_orphans(self, *, live: Collection[str] = ()) -> list[str]:
        """Pauses sessions left ACTIVE by a process that died; returns their ids."""
        ...
