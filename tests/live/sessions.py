"""An in-memory `SessionPort` for unit tests of the live side: real transitions, no store."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Collection, Sequence

from parleyd.domain import limits
from parleyd.domain.errors import InvalidArgument, Unauthenticated
from parleyd.domain.ids import new_access_token, new_session_id
from parleyd.domain.lifecycle import (
    EndReason,
    SessionEvent,
    SessionState,
    Transition,
    ensure_joinable,
    transition,
)
from parleyd.domain.session import (
    AgentMode,
    ConnectionType,
    KeyRevokedObserver,
    Message,
    MessageRole,
    SceneItem,
    Session,
)
from parleyd.live import TransitionObserver


class InMemorySessions:
    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.tokens: dict[str, str] = {}
        self.messages: dict[str, list[Message]] = {}
        self.transitions: list[tuple[str, Transition]] = []
        self.heartbeats: list[list[str]] = []
        self._observers: list[TransitionObserver] = []
        self._revocation_observers: list[KeyRevokedObserver] = []
        self.revoked: set[str] = set()
        self._changed = asyncio.Condition()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def add(
        self,
        *,
        agent_mode: AgentMode = AgentMode.EXTERNAL,
        max_duration_ms: int = 3_600_000,
        connection_type: ConnectionType = ConnectionType.AUDIO,
    ) -> tuple[Session, str]:
        """A CREATED session and its access token."""
        now = self.now_ms()
        s = Session(
            id=new_session_id(),
            api_key_id="key_test",
            agent_id="npc",
            user_id="",
            profile="",
            avatar_id="",
            connection_type=connection_type,
            speaker_id="",
            situation="You are a test.",
            rendered_situation="You are a test.",
            dynamic_info="",
            scene=[],
            metadata={},
            max_duration_ms=max_duration_ms,
            resume_window_ms=300_000,
            continue_from_session_id="",
            render_templates=False,
            state=SessionState.CREATED,
            version=1,
            create_ms=now,
            update_ms=now,
            start_ms=None,
            end_ms=None,
            expire_at_ms=None,
            duration_ms=0,
            active_since_ms=None,
            summary="",
            end_reason=None,
            agent_mode=agent_mode,
        )
        token = new_access_token()
        self.sessions[s.id] = s
        self.tokens[s.id] = token
        self.messages[s.id] = []
        return dataclasses.replace(s), token

    def on_transition(self, observer: TransitionObserver) -> None:
        self._observers.append(observer)

    def on_key_revoked(self, observer: KeyRevokedObserver) -> None:
        self._revocation_observers.append(observer)

    async def revoke(self, key_id: str) -> None:
        self.revoked.add(key_id)
        for observer in self._revocation_observers:
            await observer(key_id)

    async def admit(self, session_id: str, access_token: str) -> Session:
        if not access_token or self.tokens.get(session_id) != access_token:
            raise Unauthenticated(f"this access token does not open session {session_id}")
        session = await self.load(session_id)
        if session.api_key_id in self.revoked:
            raise Unauthenticated(f"the API key that created session {session_id} was revoked")
        ensure_joinable(session.state)
        return session

    async def load(self, session_id: str) -> Session:
        return dataclasses.replace(self.sessions[session_id])

    async def apply(
        self,
        session_id: str,
        event: SessionEvent,
        *,
        end_reason: EndReason | None = None,
        active_until_ms: int | None = None,
    ) -> Session:
        s = self.sessions[session_id]
        step = transition(s.state, event)
        if step.noop:
            return dataclasses.replace(s)
        now = self.now_ms()
        if step.leaves_active and s.active_since_ms is not None:
            s.duration_ms += (active_until_ms or now) - s.active_since_ms
            s.active_since_ms = None
        if step.enters_active:
            s.active_since_ms = now
            s.start_ms = s.start_ms or now
        if step.target.ended:
            s.end_ms = now
            s.end_reason = end_reason or EndReason.TERMINATED
        s.state = step.target
        s.version += 1
        self.transitions.append((session_id, step))
        for observer in self._observers:
            await observer(dataclasses.replace(s), step)
        async with self._changed:
            self._changed.notify_all()
        return dataclasses.replace(s)

    async def wait_state(self, session_id: str, state: SessionState, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: self.sessions[session_id].state == state)

    async def append_message(
        self,
        session_id: str,
        role: MessageRole,
        text: str,
        interaction_id: str,
        *,
        interrupted: bool = False,
    ) -> None:
        stored = self.messages[session_id]
        stored.append(
            Message(session_id, len(stored), role, text, interaction_id, self.now_ms(), interrupted)
        )

    async def load_history(self, session_id: str, *, last: int) -> list[Message]:
        return self.messages[session_id][-last:]

    async def update_context(
        self,
        session_id: str,
        *,
        dynamic_info: str | None,
        scene: tuple[SceneItem, ...] | None,
    ) -> Session:
        s = self.sessions[session_id]
        transition(s.state, SessionEvent.UPDATE)
        if dynamic_info is not None:
            if len(dynamic_info) > limits.DYNAMIC_INFO_MAX_CHARS:
                raise InvalidArgument.field("session.dynamic_info", "is too long")
            s.dynamic_info = dynamic_info
        if scene is not None:
            s.scene = list(scene)
        return dataclasses.replace(s)

    async def set_summary(self, session_id: str, summary: str) -> Session:
        self.sessions[session_id].summary = summary
        return dataclasses.replace(self.sessions[session_id])

    async def heartbeat(self, session_ids: Sequence[str]) -> None:
        self.heartbeats.append(list(session_ids))

    async def recover_orphans(self, *, live: Collection[str] = ()) -> list[str]:
        orphans = [
            sid
            for sid, s in self.sessions.items()
            if s.state == SessionState.ACTIVE and sid not in live
        ]
        for sid in orphans:
            await self.apply(sid, SessionEvent.LEAVE)
        return orphans
