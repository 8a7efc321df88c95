"""The built-in AI participant: turn taking -> speech recognition -> brain -> speech synthesis.

Each stage is its own module behind a small interface (see `interfaces`), so a stronger
recogniser, another voice or an LLM can be plugged in without touching the others. The engine
joins a session's room as its AGENT participant, exactly like an external AI backend would.
"""

from parleyd.engine.agent import BuiltinAgent, EngineParts, EngineSettings
from parleyd.engine.interfaces import (
    AvatarRenderer,
    Brain,
    Persona,
    Recognizer,
    Speech,
    Synthesizer,
    Turn,
    TurnDetector,
    UserInput,
)

__all__ = [
    "AvatarRenderer",
    "Brain",
    "BuiltinAgent",
    "EngineParts",
    "EngineSettings",
    "Persona",
    "Recognizer",
    "Speech",
    "Synthesizer",
    "Turn",
    "TurnDetector",
    "UserInput",
]
