"""Builds the built-in engine from its default, offline parts (and an LLM brain when configured)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from parleyd.engine.agent import BuiltinAgent, EngineParts, EngineSettings

if TYPE_CHECKING:
    from parleyd.live.participant import Participant
    from parleyd.live.room import Room


def default_parts(environ: Mapping[str, str]) -> EngineParts:
    """Offline by default: webrtcvad, pocketsphinx, the BM25 brain, espeak-ng, a drawn face.

    With PARLEYD_LLM_BASE_URL set, the brain is an OpenAI-compatible chat-completions endpoint.
    """
    from parleyd.engine.asr import PocketSphinxRecognizer
    from parleyd.engine.avatar import BlinkSchedule, drawn_avatar
    from parleyd.engine.llm_brain import brain_from_env
    from parleyd.engine.sentences import SentenceSplitter
    from parleyd.engine.tts import EspeakSynthesizer, voice_for
    from parleyd.engine.turns import VadTurnDetector

    schedules: dict[int, BlinkSchedule] = {}

    def blink(seed: int, index: int) -> bool:
        schedule = schedules.get(seed)
        if schedule is None:
            if len(schedules) > 1_000:
                schedules.clear()
            schedule = schedules[seed] = BlinkSchedule(seed)
        return bool(schedule.eyes_closed(index))

    return EngineParts(
        turns=lambda silence_ms: VadTurnDetector(silence_ms=silence_ms),
        recognizer=PocketSphinxRecognizer,
        brain=brain_from_env(environ),
        synthesizer=EspeakSynthesizer(),
        avatar=drawn_avatar,
        voice_for=voice_for,
        blink=blink,
        split_sentences=SentenceSplitter,
    )


def engine_factory(parts: EngineParts, settings: EngineSettings) -> Callable[[Room], Participant]:
    def make(room: Room) -> Participant:
        return BuiltinAgent(room, parts, settings)

    return make
