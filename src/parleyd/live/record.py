"""A room's stored session: the latest snapshot the room acts on, and every write the room makes.

Text enters the history here before anyone is shown it; audio never comes here. All writes go
through the `SessionPort`, never to the store directly.
"""

from __future__ import annotations

from parleyd.domain.lifecycle import EndReason, SessionEvent
from parleyd.domain.session import MessageRole, SceneItem, Session
from parleyd.live.session_port import SessionPort


class SessionRecord:
    def __init__(self, sessions: SessionPort, session: Session) -> None:
        self.sessions = sessions
        self.session = session
        self.session_id = session.id

    def now_ms(self) -> int:
        return self.sessions.now_ms()

    async def refresh(self) -> Session:
        self.session = await self.sessions.load(self.session_id)
        return self.session

    async def apply(
        self,
        event: SessionEvent,
        *,
        end_reason: EndReason | None = None,
        active_until_ms: int | None = None,
    ) -> Session:
        # The transition observer (Room.on_transition) also sets the snapshot, before this returns.
        self.session = await self.sessions.apply(
            self.session_id, event, end_reason=end_reason, active_until_ms=active_until_ms
        )
        return self.session

    async def append(
        self, role: MessageRole, text: str, interaction_id: str = "", *, interrupted: bool = False
    ) -> None:
        await self.sessions.append_message(
            self.session_id, role, text, interaction_id, interrupted=interrupted
        )

    async def update_context(
        self, dynamic_info: str | None, scene: tuple[SceneItem, ...] | None
    ) -> Session:
        self.session = await self.sessions.update_context(
            self.session_id, dynamic_info=dynamic_info, scene=scene
        )
        return self.session

    def remaining_ms(self) -> int:
        """Interaction time left before max_duration runs out, counted to now."""
        s = self.session
        return max(0, s.max_duration_ms - s.duration_at(self.now_ms()))
