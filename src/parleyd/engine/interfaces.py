"""The seams of the built-in engine. Audio is 16-bit little-endian mono PCM (bytes) throughout."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from parleyd.domain.session import SceneItem

# The engine listens at this rate: user audio reaches it resampled to 16 kHz.
LISTEN_RATE = 16_000


class TurnEvent(StrEnum):
    SPEECH_STARTED = "speech_started"
    SPEECH_STOPPED = "speech_stopped"  # end of turn: silence longer than the configured wait


class TurnDetector(Protocol):
    """Voice activity -> turn events. Fed 16 kHz PCM in chunks of any length."""

    # After SPEECH_STARTED: the speech the detector heard before it was sure it was speech (the
    # recogniser is given it first, so the start of the utterance is not lost).
    held_speech: bytes

    def feed(self, pcm: bytes) -> list[TurnEvent]: ...

    def end_of_turn(self) -> list[TurnEvent]:
        """The client said the turn is over (push-to-talk released)."""
        ...

    def reset(self) -> None: ...


class Recognizer(Protocol):
    """Speech -> text for one utterance at a time, at 16 kHz."""

    def set_context(self, texts: Sequence[str]) -> None:
        """Words the session is about (situation, scene, profile): bias recognition toward them."""
        ...

    def start(self) -> None: ...

    def feed(self, pcm: bytes) -> str | None:
        """Adds audio; returns a new partial hypothesis when there is one."""
        ...

    def finish(self) -> str:
        """The final text of the utterance ("" when nothing was understood)."""
        ...


@dataclass(frozen=True, slots=True)
class Persona:
    """What the brain knows about who it plays and where."""

    agent_id: str
    profile: str = ""
    situation: str = ""
    dynamic_info: str = ""
    scene: tuple[SceneItem, ...] = ()
    summary: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Turn:
    """One entry of the conversation as the brain sees it."""

    role: str  # "user", "agent" or "system"
    text: str


@dataclass(frozen=True, slots=True)
class UserInput:
    """What the brain answers: something the user said or typed, or a game trigger."""

    text: str = ""
    trigger: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    opening: bool = False  # the session just opened: greet, if the persona greets


class Brain(Protocol):
    def reply(
        self, persona: Persona, history: Sequence[Turn], said: UserInput
    ) -> AsyncIterator[str]:
        """The reply as a stream of text pieces (whole sentences or tokens), in order."""
        ...

    async def summarize(self, persona: Persona, history: Sequence[Turn]) -> str:
        """A short summary of the conversation so far."""
        ...


@dataclass(frozen=True, slots=True)
class VisemeAt:
    """An OVR viseme ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E",
    "ih", "oh", "ou") starting `offset_ms` into the synthesized audio."""

    viseme: str
    offset_ms: int


@dataclass(frozen=True, slots=True)
class Speech:
    pcm: bytes
    sample_rate: int
    visemes: tuple[VisemeAt, ...]

    @property
    def duration_ms(self) -> int:
        return len(self.pcm) * 1000 // (2 * self.sample_rate)


class Synthesizer(Protocol):
    async def synthesize(self, text: str, *, voice: str, sample_rate: int) -> Speech:
        """Speaks one sentence at `sample_rate`, with visemes aligned to its audio."""
        ...


class AvatarRenderer(Protocol):
    width: int
    height: int
    fps: int

    def frame(self, viseme: str, *, eyes_closed: bool) -> bytes:
        """One JPEG frame of the face with its mouth shaped for `viseme`."""
        ...
