"""The voice catalogue: which espeak-ng voices are installed, and which one a persona gets.

`voice_for(profile, speaker_id)` picks one. A `speaker_id` naming an installed voice wins (a
language such as ``en-gb``, a voice file such as ``gmw/en-US``, optionally ``+variant`` such as
``en-us+f3``). Otherwise words of the profile choose from `ROLE_VOICES`; the default is ``en-us``.
`resolve_voice` turns such a spec into the name libespeak-ng loads, from the voices and variants
the library lists (read once, on first use).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from parleyd.engine._espeak import SynthesisError, VoiceInfo, locked

DEFAULT_VOICE = "en-us"

# Profile words -> voice (first rule with a matching word wins). Voices are espeak-ng language
# voices with a variant (`espeak-ng --voices`, `espeak-ng --voices=variant`).
ROLE_VOICES: tuple[tuple[frozenset[str], str], ...] = (
    (
        frozenset(
            {"shopkeeper", "merchant", "vendor", "trader", "innkeeper", "bartender", "barkeep"}
        ),
        "en-us+m3",
    ),
    (
        frozenset({"tutor", "teacher", "professor", "lecturer", "librarian", "scholar", "coach"}),
        "en-gb-x-rp+f2",
    ),
    (
        frozenset(
            {"support", "assistant", "receptionist", "concierge", "helpdesk", "operator", "host"}
        ),
        "en-us+f3",
    ),
    (
        frozenset({"guard", "soldier", "knight", "captain", "sergeant", "sheriff", "warrior"}),
        "en-gb+m1",
    ),
    (
        frozenset({"wizard", "sage", "elder", "narrator", "oracle", "king", "storyteller"}),
        "en-gb-x-rp+m7",
    ),
    (frozenset({"pirate", "sailor", "smuggler", "fisherman"}), "en-gb-scotland+m2"),
    (frozenset({"doctor", "nurse", "healer", "therapist", "queen"}), "en-us+f2"),
    (frozenset({"robot", "android", "droid", "computer"}), "en-us+robosoft"),
)


@dataclass(frozen=True, slots=True)
class _Catalogue:
    bases: dict[str, str]  # lowercase name/language/file -> voice identifier
    variants: dict[str, str]  # lowercase name/file -> variant file name


@functools.cache
def _catalogue() -> _Catalogue:
    voices, variants = locked(lambda e: (e.voices, e.variants))
    bases: dict[str, str] = {}
    by_language: dict[str, tuple[int, str]] = {}
    for v in voices:
        if v.identifier.startswith("mb/"):
            continue  # MBROLA voices need databases that are not installed
        ident = v.identifier
        for key in (ident, ident.rsplit("/", 1)[-1], v.name, v.name.replace(" ", "_")):
            bases.setdefault(key.lower(), ident)
        for lang, prio in zip(v.languages, v.priorities, strict=True):
            best = by_language.get(lang.lower())
            if best is None or prio < best[0]:
                by_language[lang.lower()] = (prio, ident)
    for lang, (_, ident) in by_language.items():
        bases.setdefault(lang, ident)
    named: dict[str, str] = {}
    for v in variants:
        file = v.identifier.rsplit("/", 1)[-1]
        for key in (file, v.name, v.name.replace(" ", "_")):
            named.setdefault(key.lower(), file)
    return _Catalogue(bases, named)


def installed_voices() -> tuple[VoiceInfo, ...]:
    """The language voices espeak-ng has here (MBROLA ones excluded)."""
    voices = locked(lambda e: e.voices)
    return tuple(v for v in voices if not v.identifier.startswith("mb/"))


def resolve_voice(spec: str) -> str | None:
    """A voice spec ("en-gb", "en-us+f3", "gmw/en-US", "English (America)") -> the name
    espeak-ng loads ("gmw/en+f3"), or None when no such voice (or variant) is installed."""
    spec = spec.strip()
    if not spec or len(spec) > 100:
        return None
    try:
        cat = _catalogue()
    except SynthesisError:
        return None
    base, _, variant = spec.partition("+")
    ident = cat.bases.get(base.strip().lower())
    if ident is None:
        return None
    if not variant:
        return ident
    file = cat.variants.get(variant.strip().lower())
    return f"{ident}+{file}" if file else None


def voice_for(profile: str, speaker_id: str = "") -> str:
    """The voice for a persona: an installed `speaker_id` wins, else the first `ROLE_VOICES` rule
    with a word in `profile` (e.g. "shopkeeper" -> "en-us+m3", "tutor" -> "en-gb-x-rp+f2"),
    else "en-us"."""
    if speaker_id.strip() and resolve_voice(speaker_id) is not None:
        return speaker_id.strip()
    words = set(re.findall(r"[a-z]+", profile.lower()))
    for keys, voice in ROLE_VOICES:
        if words & keys:
            return voice
    return DEFAULT_VOICE


__all__ = [
    "DEFAULT_VOICE",
    "ROLE_VOICES",
    "VoiceInfo",
    "installed_voices",
    "resolve_voice",
    "voice_for",
]
