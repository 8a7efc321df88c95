"""Frames: the units the hub routes between participants, independent of any transport.

Frames are immutable; one frame object is delivered to many participants without copying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from parleyd.domain.errors import ErrorKind
from parleyd.domain.lifecycle import EndReason, SessionState
from parleyd.domain.session import SceneItem


class Role(StrEnum):
    USER = "user"
    AGENT = "agent"
    OBSERVER = "observer"


class Kind(StrEnum):
    """What a frame is, for subscriptions and for the drop policy of outboxes."""

    AUDIO = "audio"
    TEXT = "text"
    VISEMES = "visemes"
    VIDEO = "video"
    EVENT = "event"
    CONTROL = "control"  # opened, errors, closing: always delivered, never dropped


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    id: str
    role: Role
    name: str = ""
    version: str = ""
    engine: str = ""


@dataclass(frozen=True, slots=True)
class Audio:
    pcm: bytes
    sample_rate: int
    sender: str
    interaction_id: str = ""
    offset_ms: int = 0
    source_sequence: int = 0
    kind: Kind = field(default=Kind.AUDIO, init=False)


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    sender: str
    sender_role: Role
    is_final: bool = True
    interaction_id: str = ""
    offset_ms: int = 0
    kind: Kind = field(default=Kind.TEXT, init=False)


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    sender: str
    speaker_id: str = ""
    is_final: bool = True
    kind: Kind = field(default=Kind.TEXT, init=False)


@dataclass(frozen=True, slots=True)
class VisemeMark:
    id: str
    offset_ms: int
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Visemes:
    interaction_id: str
    visemes: tuple[VisemeMark, ...]
    kind: Kind = field(default=Kind.VISEMES, init=False)


@dataclass(frozen=True, slots=True)
class Video:
    image: bytes
    mime_type: str
    width: int
    height: int
    interaction_id: str = ""
    offset_ms: int = 0
    kind: Kind = field(default=Kind.VIDEO, init=False)


@dataclass(frozen=True, slots=True)
class TriggerOut:
    name: str
    payload: dict[str, Any]
    sender: str
    kind: Kind = field(default=Kind.EVENT, init=False)


@dataclass(frozen=True, slots=True)
class ContextChanged:
    dynamic_info: str | None
    scene: tuple[SceneItem, ...] | None
    kind: Kind = field(default=Kind.EVENT, init=False)


class EventType(StrEnum):
    SPEECH_STARTED = "speech_started"
    SPEECH_STOPPED = "speech_stopped"
    RESPONSE_STARTED = "response_started"
    RESPONSE_DONE = "response_done"
    INTERRUPTED = "interrupted"
    PARTICIPANT_JOINED = "participant_joined"
    PARTICIPANT_LEFT = "participant_left"
    SESSION_PAUSED = "session_paused"
    SESSION_EXPIRING = "session_expiring"
    SESSION_ENDED = "session_ended"
    FRAMES_DROPPED = "frames_dropped"
    REPLACED = "replaced"
    # A reply of the AI comes as text only (no voice here, or synthesis failed): `reason` says why.
    VOICE_UNAVAILABLE = "voice_unavailable"


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    interaction_id: str = ""
    participant: ParticipantInfo | None = None
    time_left_ms: int | None = None
    reason: str = ""
    count: int = 0
    state: SessionState | None = None
    end_reason: EndReason | None = None
    kind: Kind = field(default=Kind.EVENT, init=False)


@dataclass(frozen=True, slots=True)
class Opened:
    """The session is open for the receiving participant."""

    participant: ParticipantInfo
    sample_rate: int
    chunk_ms: int
    others: tuple[ParticipantInfo, ...]
    kind: Kind = field(default=Kind.CONTROL, init=False)


@dataclass(frozen=True, slots=True)
class StreamError:
    """A recoverable mistake in what the participant sent; nothing of it was applied."""

    code: ErrorKind  # each transport maps it to its own code
    message: str
    field_path: str = ""
    kind: Kind = field(default=Kind.CONTROL, init=False)


class CloseCode(StrEnum):
    OK = "ok"  # the session paused or ended, or the participant left
    ABORTED = "aborted"  # replaced by a takeover
    UNAVAILABLE = "unavailable"  # no AGENT came in time, or the server is shutting down
    UNAUTHENTICATED = "unauthenticated"  # the API key that created the session was revoked


@dataclass(frozen=True, slots=True)
class Close:
    """Last frame toward a participant: its transport ends with `code` after delivering it."""

    code: CloseCode
    reason: str
    kind: Kind = field(default=Kind.CONTROL, init=False)


OutFrame = (
    Audio
    | Text
    | Transcript
    | Visemes
    | Video
    | TriggerOut
    | ContextChanged
    | Event
    | Opened
    | StreamError
    | Close
)
