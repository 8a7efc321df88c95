"""What participants send into a room, independent of any transport."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parleyd.domain.session import SceneItem
from parleyd.live.frames import EventType, VisemeMark


@dataclass(frozen=True, slots=True)
class AudioIn:
    pcm: bytes
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class TextIn:
    text: str


@dataclass(frozen=True, slots=True)
class TriggerIn:
    name: str
    payload: dict[str, Any]
    encoded_size: int = 0


@dataclass(frozen=True, slots=True)
class ContextIn:
    dynamic_info: str | None
    scene: tuple[SceneItem, ...] | None


@dataclass(frozen=True, slots=True)
class PlaybackMarkIn:
    interaction_id: str
    played_ms: int


@dataclass(frozen=True, slots=True)
class InterruptIn:
    interaction_id: str = ""
    played_ms: int | None = None


@dataclass(frozen=True, slots=True)
class EndOfTurnIn:
    pass


@dataclass(frozen=True, slots=True)
class LeaveIn:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReplyStartIn:
    interaction_id: str = ""


@dataclass(frozen=True, slots=True)
class ReplyAudioIn:
    pcm: bytes
    interaction_id: str = ""
    sample_rate: int | None = None  # None: the agent's joined rate


@dataclass(frozen=True, slots=True)
class ReplyVideoIn:
    """AGENT: a frame of avatar video for the reply in flight (or idle, with no reply)."""

    image: bytes
    mime_type: str
    width: int
    height: int
    interaction_id: str = ""
    offset_ms: int = 0


@dataclass(frozen=True, slots=True)
class ReplyCancelIn:
    """AGENT: it stopped a reply because the user spoke over it (barge-in it detected itself)."""

    interaction_id: str = ""
    played_ms: int | None = None  # the agent's estimate, used when the client sent no marks


@dataclass(frozen=True, slots=True)
class TranscriptIn:
    """AGENT: what the user said, as the agent recognised it; final ones enter the history."""

    text: str
    is_final: bool = True


@dataclass(frozen=True, slots=True)
class SpeechIn:
    """AGENT: the user started (or stopped) speaking, as the agent's voice detection heard it."""

    started: bool


@dataclass(frozen=True, slots=True)
class NoticeIn:
    """AGENT: something the people in the session should know about a reply, shown to them as an
    `Event` of `kind` (only VOICE_UNAVAILABLE: the reply comes as text only, `reason` says why).
    The built-in engine sends it; no transport does."""

    kind: EventType
    interaction_id: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReplyTextIn:
    text: str
    interaction_id: str = ""
    offset_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ReplyVisemesIn:
    visemes: tuple[VisemeMark, ...]
    interaction_id: str = ""


@dataclass(frozen=True, slots=True)
class ReplyEndIn:
    interaction_id: str = ""


InFrame = (
    AudioIn
    | TextIn
    | TriggerIn
    | ContextIn
    | PlaybackMarkIn
    | InterruptIn
    | EndOfTurnIn
    | LeaveIn
    | ReplyStartIn
    | ReplyAudioIn
    | ReplyTextIn
    | ReplyVisemesIn
    | ReplyEndIn
    | ReplyVideoIn
    | ReplyCancelIn
    | TranscriptIn
    | SpeechIn
    | NoticeIn
)
