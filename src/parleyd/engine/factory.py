"""Builds the built-in engine from its default, offline parts (and an LLM brain when configured).

Its components are checked once, at start-up (`check_engine`): the voice (libespeak-ng), speech
recognition (pocketsphinx), voice activity detection (webrtcvad) and the avatar (Pillow). A
missing one is reported once (a WARNING, the start-up banner, a health service of its own) and
the engine runs without it: with no voice, replies come as text only (each one says so with an
EVENT_TYPE_VOICE_UNAVAILABLE event); with no recognition or voice activity detection, it answers
typed text and triggers but hears no speech; with no avatar, VIDEO sessions get no face frames.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from parleyd.engine.agent import BuiltinAgent, EngineParts, EngineSettings
from parleyd.engine.interfaces import TurnEvent
from parleyd.engine.llm_brain import LlmSettings
from parleyd.live import AgentFactory, AgentLink, BuiltinParticipant

log = logging.getLogger("parleyd.engine")

HEALTH_PREFIX = "parleyd.engine."  # + a component's key: its gRPC health service name

VOICE = "voice"
SPEECH_RECOGNITION = "speech_recognition"
VOICE_ACTIVITY = "voice_activity"
AVATAR = "avatar"


@dataclass(frozen=True, slots=True)
class ComponentCheck:
    """One component of the engine as found at start-up: ok, or why not and what to do."""

    key: str  # VOICE, SPEECH_RECOGNITION, VOICE_ACTIVITY or AVATAR
    label: str  # "voice", "speech recognition", ...
    problem: str = ""  # why it is unavailable ("" when it works)
    fix: str = ""  # what makes it work
    without: str = ""  # what the engine does without it

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def health_service(self) -> str:
        """Its gRPC health service name: SERVING when ok, else NOT_SERVING."""
        return HEALTH_PREFIX + self.key

    def describe(self) -> str:
        """One line: "voice ok", or "voice unavailable — <problem>; <fix>; <without>"."""
        if self.ok:
            return f"{self.label} ok"
        return "; ".join(
            part
            for part in (f"{self.label} unavailable — {self.problem}", self.fix, self.without)
            if part
        )


@dataclass(frozen=True, slots=True)
class EngineCheck:
    """What of the engine works here: one `ComponentCheck` per component."""

    components: tuple[ComponentCheck, ...]

    def component(self, key: str) -> ComponentCheck:
        for c in self.components:
            if c.key == key:
                return c
        raise KeyError(key)

    @property
    def missing(self) -> tuple[ComponentCheck, ...]:
        return tuple(c for c in self.components if not c.ok)

    def lines(self) -> list[str]:
        """One line per component, for the start-up banner ("engine: speech recognition ok")."""
        return [f"engine: {c.describe()}" for c in self.components]


def _check(
    key: str, label: str, probe: Callable[[], str | None], fix: str, without: str
) -> ComponentCheck:
    try:
        problem = probe()
    except Exception as exc:  # a broken component must not stop the server: report it
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        return ComponentCheck(key, label, problem, fix, without)
    return ComponentCheck(key, label)


def _voice() -> str | None:
    from parleyd.engine.tts import espeak_problem

    return espeak_problem()


def _speech_recognition() -> str | None:
    import pocketsphinx  # type: ignore[import-untyped]

    from parleyd.engine import asr  # noqa: F401  (its import fails the same way at run time)

    model = pocketsphinx.get_model_path("en-us")
    return None if os.path.isdir(model) else f"pocketsphinx's en-us model is missing ({model})"


def _voice_activity() -> str | None:
    import webrtcvad  # type: ignore[import-untyped]

    from parleyd.engine import turns  # noqa: F401

    webrtcvad.Vad(2)
    return None


def _avatar() -> str | None:
    from PIL import features

    from parleyd.engine import avatar  # noqa: F401

    return None if features.check_codec("jpg") else "Pillow was built without JPEG support"


def check_engine() -> EngineCheck:
    """Checks each component once, logging one WARNING per missing one."""
    found = EngineCheck(
        (
            _check(
                VOICE,
                "voice",
                _voice,
                "install espeak-ng (apt-get install espeak-ng) or set PARLEYD_ESPEAK_LIBRARY",
                "replies are text only",
            ),
            _check(
                SPEECH_RECOGNITION,
                "speech recognition",
                _speech_recognition,
                "reinstall parleyd's dependencies (pip install pocketsphinx)",
                "the engine hears no speech, only typed text",
            ),
            _check(
                VOICE_ACTIVITY,
                "voice activity detection",
                _voice_activity,
                "reinstall parleyd's dependencies (pip install webrtcvad-wheels)",
                "the engine hears no speech, only typed text",
            ),
            _check(
                AVATAR,
                "avatar",
                _avatar,
                "reinstall parleyd's dependencies (pip install Pillow)",
                "VIDEO sessions get no face",
            ),
        )
    )
    for c in found.missing:  # (the log escapes non-ASCII: no dash there)
        log.warning("engine: %s", c.describe().replace(" — ", ": ", 1))
    return found


class _Deaf:
    """The turn detector of an engine that cannot hear: it never reports speech."""

    held_speech = b""

    def feed(self, pcm: bytes) -> list[TurnEvent]:
        return []

    def end_of_turn(self) -> list[TurnEvent]:
        return []

    def reset(self) -> None:
        pass


def default_parts(llm: LlmSettings, check: EngineCheck | None = None) -> EngineParts:
    """Offline by default: webrtcvad, pocketsphinx, the BM25 brain, espeak-ng, a drawn face, each
    left out when `check` (by default a fresh `check_engine()`) found it missing.

    With `llm.base_url` set, the brain is an OpenAI-compatible chat-completions endpoint.
    """
    from parleyd.engine.llm_brain import brain_for
    from parleyd.engine.sentences import SentenceSplitter

    if check is None:
        check = check_engine()
    parts = EngineParts(
        turns=lambda silence_ms: _Deaf(),
        recognizer=None,
        brain=brain_for(llm),
        synthesizer=None,
        avatar=None,
        split_sentences=SentenceSplitter,
    )
    voice = check.component(VOICE)
    if voice.ok:
        from parleyd.engine.tts import EspeakSynthesizer
        from parleyd.engine.voices import voice_for

        parts.synthesizer = EspeakSynthesizer()
        parts.voice_for = voice_for
    else:
        parts.voice_unavailable = f"voice (espeak-ng) unavailable: {voice.problem}"
    if check.component(SPEECH_RECOGNITION).ok and check.component(VOICE_ACTIVITY).ok:
        from parleyd.engine.asr import PocketSphinxRecognizer
        from parleyd.engine.turns import VadTurnDetector

        parts.turns = lambda silence_ms: VadTurnDetector(silence_ms=silence_ms)
        parts.recognizer = PocketSphinxRecognizer
    if check.component(AVATAR).ok:
        from parleyd.engine.avatar import BlinkSchedule, drawn_avatar

        schedules: dict[int, BlinkSchedule] = {}

        def blink(seed: int, index: int) -> bool:
            schedule = schedules.get(seed)
            if schedule is None:
                if len(schedules) > 1_000:
                    schedules.clear()
                schedule = schedules[seed] = BlinkSchedule(seed)
            return bool(schedule.eyes_closed(index))

        parts.avatar = drawn_avatar
        parts.blink = blink
    return parts


def engine_factory(parts: EngineParts, settings: EngineSettings) -> AgentFactory:
    """What a room calls to start its built-in AGENT: one `BuiltinAgent` per live session."""

    def make(link: AgentLink) -> BuiltinParticipant:
        return BuiltinAgent(link, parts, settings)

    return make
