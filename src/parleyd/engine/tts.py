"""Offline speech: espeak-ng, with visemes timed from the synthesizer's own phoneme events.

`EspeakSynthesizer` speaks one sentence at a time through libespeak-ng (`_espeak`: why the
library and not the command, and how it is kept to one thread). The phoneme events come from the
same synthesis as the audio, so the visemes are exact to the millisecond of the speech.
Voices are chosen by `parleyd.engine.voices`.

Text is cleaned first (`clean_text`): control characters go, whitespace collapses, and it is cut
to ``MAX_CHARS`` at a word boundary. espeak-ng speaks at 22050 Hz; `synthesize` converts to the
rate asked (8-48 kHz) with `parleyd.audio.resample_pcm` in the default thread pool, while
`synthesize_native` hands back espeak-ng's own samples.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata

from parleyd.audio import duration_ms, resample_pcm
from parleyd.engine._espeak import (
    LOCK,
    MAX_AUDIO_S,
    LibraryUnavailable,
    SynthesisError,
    engine,
    executor,
    locked,
)
from parleyd.engine.interfaces import Speech
from parleyd.engine.visemes import viseme_track
from parleyd.engine.voices import DEFAULT_VOICE, resolve_voice

log = logging.getLogger("parleyd.engine.tts")

MIN_RATE = 8_000
MAX_RATE = 48_000
MAX_CHARS = 1_000
DEFAULT_WPM = 175

_WARNED: set[str] = set()


def espeak_problem() -> str | None:
    """None when libespeak-ng loads and initializes here; else why not, in a few words
    ("libespeak-ng.so.1 not found"). The library is loaded once: later calls repeat the answer."""
    try:
        locked(lambda e: e.sample_rate)
    except LibraryUnavailable as exc:
        return exc.reason
    except SynthesisError as exc:
        return str(exc)
    return None


def espeak_available() -> bool:
    """Whether libespeak-ng loads and initializes here (the engine's start-up check says why
    not, once: `parleyd.engine.factory.check_engine`)."""
    return espeak_problem() is None


def native_rate() -> int:
    """The rate espeak-ng synthesizes at (22050 Hz)."""
    return locked(lambda e: e.sample_rate)


def clean_text(text: str, limit: int = MAX_CHARS) -> str:
    """Text as espeak-ng gets it: no control characters, whitespace collapsed, at most `limit`
    characters (cut at a word boundary when there is one in the last half)."""
    kept = "".join(
        " " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
        for c in text
        if unicodedata.category(c) not in ("Cs", "Co", "Cn")
    )
    kept = " ".join(kept.split())
    if len(kept) > limit:
        cut = kept[: limit + 1]
        space = cut.rfind(" ")
        kept = cut[:space] if space > limit // 2 else kept[:limit]
        log.warning("text cut to %d characters for speech", len(kept))
    return kept


class EspeakSynthesizer:
    """`Synthesizer` on libespeak-ng: one sentence -> PCM16 at the asked rate + OVR visemes."""

    def __init__(self, *, rate_wpm: int = DEFAULT_WPM, default_voice: str = DEFAULT_VOICE) -> None:
        self.rate_wpm = rate_wpm
        self.default_voice = default_voice

    def _voice(self, voice: str) -> str:
        """The name libespeak-ng loads for `voice`, else for the default voice. Called with the
        library loaded, so that a voice it does not list really is a missing voice."""
        resolved = resolve_voice(voice) if voice else None
        if resolved is not None:
            return resolved
        fallback = resolve_voice(self.default_voice)
        if fallback is None:
            if self.default_voice not in _WARNED:
                _WARNED.add(self.default_voice)
                log.warning(
                    "espeak-ng lists no voice %r (is its data installed? see ESPEAK_DATA_PATH)",
                    self.default_voice,
                )
            return self.default_voice
        if voice and voice not in _WARNED:
            _WARNED.add(voice)
            log.warning("no espeak-ng voice %r, using %r", voice, self.default_voice)
        return fallback

    def _speak(self, text: str, voice: str) -> tuple[bytes, int, list[tuple[str, int]]]:
        """Blocking: runs on the espeak worker thread."""
        with LOCK:
            engine()  # a missing library raises here: it is the error, not the voice
        name = self._voice(voice)
        with LOCK:
            espeak = engine()
            pcm, events = espeak.speak(text, name, self.rate_wpm)
            return pcm, espeak.sample_rate, events

    async def _native(self, text: str, voice: str) -> tuple[bytes, int, list[tuple[str, int]]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor(), self._speak, text, voice)

    async def synthesize_native(self, text: str, *, voice: str) -> Speech:
        """Speech at espeak-ng's own rate (22050 Hz), exactly as it synthesized it."""
        text = clean_text(text)
        if not text:
            loop = asyncio.get_running_loop()
            return Speech(b"", await loop.run_in_executor(executor(), native_rate), ())
        pcm, rate, events = await self._native(text, voice)
        return Speech(pcm, rate, viseme_track(events, end_ms=duration_ms(pcm, rate)))

    async def synthesize(self, text: str, *, voice: str, sample_rate: int) -> Speech:
        if not MIN_RATE <= sample_rate <= MAX_RATE:
            raise ValueError(f"sample_rate must be {MIN_RATE}..{MAX_RATE} Hz, not {sample_rate}")
        text = clean_text(text)
        if not text:
            return Speech(b"", sample_rate, ())
        pcm, rate, events = await self._native(text, voice)
        if pcm and rate != sample_rate:
            pcm = await asyncio.to_thread(resample_pcm, pcm, rate, sample_rate)
        if not pcm:
            return Speech(b"", sample_rate, ())
        return Speech(pcm, sample_rate, viseme_track(events, end_ms=duration_ms(pcm, sample_rate)))


__all__ = [
    "DEFAULT_WPM",
    "MAX_AUDIO_S",
    "MAX_CHARS",
    "MAX_RATE",
    "MIN_RATE",
    "EspeakSynthesizer",
    "SynthesisError",
    "clean_text",
    "espeak_available",
    "espeak_problem",
    "native_rate",
]
