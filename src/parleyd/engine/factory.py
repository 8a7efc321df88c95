"""Builds the built-in engine from its default, offline parts (and an LLM brain when configured)."""

from __future__ import annotations

from parleyd.engine.agent import BuiltinAgent, EngineParts, EngineSettings
from parleyd.engine.llm_brain import LlmSettings
from parleyd.live import AgentFactory, AgentLink, BuiltinParticipant


def default_parts(llm: LlmSettings) -> EngineParts:
    """Offline by default: webrtcvad, pocketsphinx, the BM25 brain, espeak-ng, a drawn face.

    With `llm.base_url` set, the brain is an OpenAI-compatible chat-completions endpoint.
    """
    from parleyd.engine.asr import PocketSphinxRecognizer
    from parleyd.engine.avatar import BlinkSchedule, drawn_avatar
    from parleyd.engine.llm_brain import brain_for
    from parleyd.engine.sentences import SentenceSplitter
    from parleyd.engine.tts import EspeakSynthesizer
    from parleyd.engine.turns import VadTurnDetector
    from parleyd.engine.voices import voice_for

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
        brain=brain_for(llm),
        synthesizer=EspeakSynthesizer(),
        avatar=drawn_avatar,
        voice_for=voice_for,
        blink=blink,
        split_sentences=SentenceSplitter,
    )


def engine_factory(parts: EngineParts, settings: EngineSettings) -> AgentFactory:
    """What a room calls to start its built-in AGENT: one `BuiltinAgent` per live session."""

    def make(link: AgentLink) -> BuiltinParticipant:
        return BuiltinAgent(link, parts, settings)

    return make
