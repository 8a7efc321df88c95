"""The Session resource as the domain sees it, independent of protobuf and SQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from parleyd.domain.lifecycle import EndReason, SessionState, Transition


class AgentMode(StrEnum):
    BUILTIN = "builtin"  # the built-in engine is the AI
    EXTERNAL = "external"  # an AGENT participant attached on Interact is the AI


class ConnectionType(StrEnum):
    AUDIO = "audio"
    VIDEO = "video"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class SceneItem:
    name: str
    description: str = ""


@dataclass(slots=True)
class SessionSpec:
    """What a caller may set on a session: the fields of CreateSession and UpdateSession."""

    agent_id: str = ""
    user_id: str = ""
    profile: str = ""
    avatar_id: str = ""
    connection_type: ConnectionType = ConnectionType.AUDIO
    speaker_id: str = ""
    situation: str = ""
    dynamic_info: str = ""
    scene: list[SceneItem] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    max_duration_ms: int | None = None
    resume_window_ms: int | None = None
    continue_from_session_id: str = ""
    render_templates: bool = False
    agent_mode: AgentMode = AgentMode.BUILTIN


# Fields UpdateSession may change (proto field names), in the order the proto declares them.
WRITABLE_FIELDS: tuple[str, ...] = (
    "profile",
    "avatar_id",
    "connection_type",
    "speaker_id",
    "situation",
    "dynamic_info",
    "scene",
    "metadata",
    "max_duration",
    "resume_window",
    "render_templates",
)
# Fields CreateSession checks: the writable ones plus those fixed at creation.
CREATE_FIELDS: tuple[str, ...] = (
    "agent_id",
    "user_id",
    *(f for f in WRITABLE_FIELDS if f not in ("connection_type", "render_templates")),
    "continue_from_session_id",
)
IMMUTABLE_FIELDS: tuple[str, ...] = (
    "agent_id",
    "user_id",
    "continue_from_session_id",
    "agent_mode",
)
OUTPUT_ONLY_FIELDS: tuple[str, ...] = (
    "id",
    "state",
    "create_time",
    "update_time",
    "start_time",
    "end_time",
    "expire_time",
    "duration",
    "summary",
    "rendered_situation",
    "end_reason",
)


@dataclass(slots=True)
class Session:
    """A stored session. Times are UTC epoch milliseconds."""

    id: str
    api_key_id: str
    agent_id: str
    user_id: str
    profile: str
    avatar_id: str
    connection_type: ConnectionType
    speaker_id: str
    situation: str
    rendered_situation: str
    dynamic_info: str
    scene: list[SceneItem]
    metadata: dict[str, str]
    max_duration_ms: int
    resume_window_ms: int
    continue_from_session_id: str
    render_templates: bool
    state: SessionState
    version: int
    create_ms: int
    update_ms: int
    start_ms: int | None
    end_ms: int | None
    # When the session expires if nothing changes: end of the resume window while CREATED or
    # PAUSED, the moment max_duration runs out while ACTIVE, the expiry itself once EXPIRED.
    expire_at_ms: int | None
    # ACTIVE time of closed intervals; the open one runs from active_since_ms.
    duration_ms: int
    active_since_ms: int | None
    summary: str
    end_reason: EndReason | None
    agent_mode: AgentMode = AgentMode.BUILTIN

    def duration_at(self, now_ms: int) -> int:
        """ACTIVE time used as of `now_ms`, counting the interval still open — never past
        max_duration, which is where billing ends even before the expiry sweep notices."""
        if self.state == SessionState.ACTIVE and self.active_since_ms is not None:
            running = self.duration_ms + max(0, now_ms - self.active_since_ms)
            return max(self.duration_ms, min(self.max_duration_ms, running))
        return self.duration_ms


class MessageRole(StrEnum):
    USER = "user"
    AGENT = "agent"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Message:
    session_id: str
    index: int
    role: MessageRole
    text: str
    interaction_id: str
    create_ms: int
    interrupted: bool = False
    inherited_from_session_id: str = ""


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    max_session_duration_ms: int
    create_ms: int
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class SessionUsage:
    session_id: str
    agent_id: str
    duration_ms: int


def expiry_after_change(
    session: Session, *, max_duration_ms: int, resume_window_ms: int
) -> int | None:
    """`expire_at_ms` of `session` once its max_duration / resume_window take the given values."""
    if session.state == SessionState.CREATED:
        return session.create_ms + resume_window_ms
    if session.state == SessionState.PAUSED and session.expire_at_ms is not None:
        return session.expire_at_ms - session.resume_window_ms + resume_window_ms
    if session.state == SessionState.ACTIVE and session.active_since_ms is not None:
        return session.active_since_ms + max(0, max_duration_ms - session.duration_ms)
    return session.expire_at_ms


# Hears of every committed state change of a session (the hub closes streams with it).
TransitionObserver = Callable[["Session", Transition], Awaitable[None]]
# Hears of every revoked API key, by its id (the hub ends the live streams of its sessions).
KeyRevokedObserver = Callable[[str], Awaitable[None]]
