"""Offline speech: espeak-ng, with visemes timed from the synthesizer's own phoneme events.

How the timing is obtained (the options, measured on espeak-ng 1.51, Debian):

* ``espeak-ng --pho`` prints phonemes with durations only for MBROLA voices; no MBROLA voice
  (nor the ``mbrola`` binary) is installed, and with the normal voices it prints nothing.
* ``espeak-ng -x`` prints phonemes without any timing: spreading them over the audio by energy
  guesses every boundary inside a word.
* **libespeak-ng through ctypes (chosen).** With ``espeakINITIALIZE_PHONEME_EVENTS`` the library
  reports an ``espeakEVENT_PHONEME`` event, with its ``audio_position`` in ms, at the point of the
  very audio buffer where each phoneme starts, in the same callback that delivers the samples.
  Audio and phonemes come from one synthesis, so they cannot drift apart: the visemes are exact
  to the millisecond of what espeak-ng itself synthesizes (its final pause event lands on the
  last sample). It is also fast: no process per sentence, and 2-5 ms of work per second of speech.

The library is the one the ``espeak-ng`` command itself runs on (Debian ``libespeak-ng1``); a
pip-only install can point ``PARLEYD_ESPEAK_LIBRARY`` (and ``ESPEAK_DATA_PATH``) at the copy that
PyPI ``espeakng-loader`` ships, which is also looked for. The library keeps global state and is not
thread-safe, so every call into it runs on one dedicated worker thread, under a lock, never on the
event loop; resampling then runs in the default thread pool. User text is handed to
``espeak_Synth`` as a UTF-8 buffer, never through a command line, without the SSML and ``[[...]]``
phoneme-input flags, so markup, quotes, dashes or ``--help`` are simply read out. A text is bounded
to ``MAX_CHARS`` (cut at a word boundary) and a synthesis to ``MAX_AUDIO_S`` of audio.

espeak-ng speaks at 22050 Hz; `resample` converts to the rate asked (8-48 kHz) with a polyphase
Kaiser-windowed sinc filter (anti-aliased, stop band below -80 dB; a 1 kHz tone keeps an SNR
above 60 dB) — much cleaner than ``audioop.ratecv``, which barely filters.

Voices: `voice_for(profile, speaker_id)` picks one. A `speaker_id` naming an installed voice wins
(a language such as ``en-gb``, a voice file such as ``gmw/en-US``, optionally ``+variant`` such as
``en-us+f3``). Otherwise words of the profile choose from `ROLE_VOICES`; the default is ``en-us``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import importlib
import logging
import math
import os
import re
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from parleyd.engine.interfaces import Speech
from parleyd.engine.visemes import viseme_track

log = logging.getLogger("parleyd.engine.tts")

MIN_RATE = 8_000
MAX_RATE = 48_000
MAX_CHARS = 1_000
MAX_AUDIO_S = 120
DEFAULT_VOICE = "en-us"
DEFAULT_WPM = 175

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


class SynthesisError(RuntimeError):
    """espeak-ng could not be loaded or failed to speak."""


# -- libespeak-ng through ctypes (speak_lib.h, API revision 12) -------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # a short pause after the text, as the espeak-ng command adds
_PARAM_RATE = 1
_EE_OK = 0


class _EventId(ctypes.Union):
    _fields_ = (
        ("number", ctypes.c_int),
        ("name", ctypes.c_void_p),
        ("string", ctypes.c_char * 8),
    )


class _Event(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    )


class _Voice(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated string)*, then 0
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    name: str
    identifier: str  # file under espeak-ng-data/voices (e.g. "gmw/en-US", "!v/m3")
    languages: tuple[str, ...]
    priorities: tuple[int, ...]  # per language: lower is a better match for it
    gender: str  # "male", "female" or ""


@dataclass(slots=True)
class _Job:
    limit: int
    chunks: list[bytes]
    events: list[tuple[str, int]]
    samples: int = 0
    truncated: bool = False


def _library_candidates() -> list[tuple[str, str | None]]:
    """(library, data path or None) pairs to try, most specific first."""
    found: list[tuple[str, str | None]] = []
    explicit = os.environ.get("PARLEYD_ESPEAK_LIBRARY")
    if explicit:
        found.append((explicit, os.environ.get("ESPEAK_DATA_PATH")))
    by_name = ctypes.util.find_library("espeak-ng")
    if by_name:
        found.append((by_name, None))
    found.append(("libespeak-ng.so.1", None))
    try:  # PyPI espeakng-loader: library and data inside a wheel
        loader: Any = importlib.import_module("espeakng_loader")
        found.append((str(loader.get_library_path()), str(loader.get_data_path())))
    except Exception:
        pass
    return found


class _Espeak:
    """The process's one libespeak-ng. Every method must be called holding `_LOCK`."""

    def __init__(self) -> None:
        errors: list[str] = []
        for path, data in _library_candidates():
            try:
                lib = ctypes.CDLL(path)
            except OSError as exc:
                errors.append(f"{path}: {exc}")
                continue
            self._declare(lib)
            rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS,
                100,
                data.encode() if data else None,
                _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT,
            )
            if rate <= 0:
                errors.append(f"{path}: espeak_Initialize failed ({rate})")
                continue
            self.lib = lib
            self.sample_rate = int(rate)
            break
        else:
            raise SynthesisError("libespeak-ng not usable: " + "; ".join(errors))
        version = ctypes.c_char_p()
        self.version = (lib.espeak_Info(ctypes.byref(version)) or b"?").decode()
        # Keep the callback object alive as long as the library may call it.
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self._job: _Job | None = None
        self._voice = ""
        self.voices = self._list_voices(None)
        self.variants = self._list_voices(b"variant")
        log.info(
            "espeak-ng %s at %d Hz: %d voices", self.version, self.sample_rate, len(self.voices)
        )

    @staticmethod
    def _declare(lib: ctypes.CDLL) -> None:
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Info.argtypes = (ctypes.POINTER(ctypes.c_char_p),)
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_SetSynthCallback.argtypes = (_SynthCallback,)
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = (
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        )
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = ()
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = (ctypes.POINTER(_Voice),)
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))

    def _list_voices(self, language: bytes | None) -> tuple[VoiceInfo, ...]:
        keep = ctypes.create_string_buffer(language) if language else None
        spec = _Voice()
        if keep is not None:
            spec.languages = ctypes.addressof(keep)
        found = self.lib.espeak_ListVoices(ctypes.byref(spec) if keep is not None else None)
        voices: list[VoiceInfo] = []
        k = 0
        while found[k]:
            v = found[k].contents
            langs: list[str] = []
            prios: list[int] = []
            p = v.languages or 0
            while p and ctypes.c_ubyte.from_address(p).value:
                prios.append(ctypes.c_ubyte.from_address(p).value)
                s = ctypes.string_at(p + 1)
                langs.append(s.decode(errors="replace"))
                p += len(s) + 2
            gender = {1: "male", 2: "female"}.get(v.gender, "")
            name = (v.name or b"").decode(errors="replace")
            ident = (v.identifier or b"").decode(errors="replace")
            voices.append(VoiceInfo(name, ident, tuple(langs), tuple(prios), gender))
            k += 1
        return tuple(voices)

    def _on_audio(self, wav: Any, count: int, events: Any) -> int:
        job = self._job
        if job is None:
            return 1
        try:
            if count > 0 and wav:
                take = min(count, job.limit - job.samples)
                if take > 0:
                    job.chunks.append(ctypes.string_at(wav, take * 2))
                    job.samples += take
                if take < count:
                    job.truncated = True
                    return 1  # abort: the bound on audio per synthesis
            k = 0
            while events[k].type != _EVENT_LIST_TERMINATED:
                ev = events[k]
                if ev.type == _EVENT_PHONEME:
                    name = ev.id.string.decode("utf-8", errors="replace")
                    job.events.append((name, int(ev.audio_position)))
                k += 1
        except Exception:  # never let an exception cross into C
            log.exception("espeak-ng callback failed")
            return 1
        return 0

    def speak(self, text: str, voice: str, wpm: int) -> tuple[bytes, list[tuple[str, int]]]:
        if voice != self._voice:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise SynthesisError(f"espeak-ng refused voice {voice!r}")
            self._voice = voice
        self.lib.espeak_SetParameter(_PARAM_RATE, max(80, min(450, wpm)), 0)
        data = text.encode("utf-8", errors="replace")
        job = _Job(limit=MAX_AUDIO_S * self.sample_rate, chunks=[], events=[])
        self._job = job
        try:
            err = self.lib.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
            )
            self.lib.espeak_Synchronize()
        finally:
            self._job = None
        if err != _EE_OK and not job.truncated:
            raise SynthesisError(f"espeak_Synth failed ({err})")
        if job.truncated:
            log.warning("speech cut at %d s", MAX_AUDIO_S)
        return b"".join(job.chunks), job.events


_LOCK = threading.Lock()
_EXECUTOR_LOCK = threading.Lock()
_ENGINE: _Espeak | None = None
_FAILED: SynthesisError | None = None
_WARNED: set[str] = set()
_EXECUTOR: ThreadPoolExecutor | None = None
_T = TypeVar("_T")


def _engine() -> _Espeak:
    """The loaded library (loading it on first use). Call holding `_LOCK`."""
    global _ENGINE, _FAILED
    if _ENGINE is None:
        if _FAILED is not None:
            raise _FAILED
        try:
            _ENGINE = _Espeak()
        except SynthesisError as exc:
            _FAILED = exc
            raise
    return _ENGINE


def _locked(fn: Callable[[_Espeak], _T]) -> _T:
    with _LOCK:
        return fn(_engine())


def _executor() -> ThreadPoolExecutor:
    global _EXECUTOR
    with _EXECUTOR_LOCK:  # not _LOCK: a synthesis in flight must not stall the event loop
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        return _EXECUTOR


def espeak_available() -> bool:
    """Whether libespeak-ng loads and initializes here."""
    try:
        _locked(lambda e: e.sample_rate)
    except SynthesisError as exc:
        log.warning("%s", exc)
        return False
    return True


def native_rate() -> int:
    """The rate espeak-ng synthesizes at (22050 Hz)."""
    return _locked(lambda e: e.sample_rate)


# -- voices ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Catalogue:
    bases: dict[str, str]  # lowercase name/language/file -> voice identifier
    variants: dict[str, str]  # lowercase name/file -> variant file name


@functools.cache
def _catalogue() -> _Catalogue:
    voices, variants = _locked(lambda e: (e.voices, e.variants))
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
    voices = _locked(lambda e: e.voices)
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


# -- text ----------------------------------------------------------------------------------------


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


# -- resampling ----------------------------------------------------------------------------------

_ZERO_CROSSINGS = 16  # per side, at the lower of the two rates
_ROLLOFF = 0.92  # pass band edge as a fraction of the lower Nyquist
_KAISER_BETA = 8.6  # ~ -85 dB stop band


@functools.lru_cache(maxsize=32)
def _polyphase_bank(up: int, down: int) -> tuple[npt.NDArray[np.float64], int]:
    """The low-pass prototype at `up` x the input rate, split into `up` phases of equal length
    (each reversed, ready for a dot product with the input window), and its centre tap."""
    fc = 0.5 * _ROLLOFF / max(up, down)  # cycles per upsampled sample
    half = math.ceil(_ZERO_CROSSINGS * max(up, down) / _ROLLOFF)
    n = np.arange(2 * half + 1, dtype=np.float64)  # odd length: the centre is a whole tap
    h = 2 * fc * np.sinc(2 * fc * (n - half)) * np.kaiser(2 * half + 1, _KAISER_BETA) * up
    taps = math.ceil(len(h) / up) * up
    h = np.concatenate((h, np.zeros(taps - len(h))))
    bank = h.reshape(taps // up, up).T[:, ::-1].copy()
    return bank, half


def resample(samples: npt.NDArray[np.int16], from_rate: int, to_rate: int) -> npt.NDArray[np.int16]:
    """Mono 16-bit samples from one rate to another (polyphase windowed sinc, no delay)."""
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError("sample rates must be positive")
    if from_rate == to_rate or len(samples) == 0:
        return samples.astype(np.int16, copy=True)
    g = math.gcd(from_rate, to_rate)
    up, down = to_rate // g, from_rate // g
    bank, centre = _polyphase_bank(up, down)
    k = bank.shape[1]
    n_in = len(samples)
    n_out = (n_in * up + down - 1) // down
    x = samples.astype(np.float64)
    last_q = ((n_out - 1) * down + centre) // up
    xp = np.concatenate((np.zeros(k), x, np.zeros(max(0, last_q + 2 - n_in))))
    windows = np.lib.stride_tricks.sliding_window_view(xp, k)
    out = np.empty(n_out, dtype=np.float64)
    # Outputs r, r + up, r + 2*up, ... share one filter phase and step `down` inputs at a time.
    for r in range(min(up, n_out)):
        q, p = divmod(r * down + centre, up)
        count = len(range(r, n_out, up))
        out[r::up] = windows[q + 1 : q + 1 + count * down : down] @ bank[p]
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def resample_pcm(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """`resample` for little-endian PCM16 bytes."""
    samples = np.frombuffer(pcm, dtype="<i2")
    return resample(samples.astype(np.int16), from_rate, to_rate).astype("<i2").tobytes()


# -- the synthesizer -----------------------------------------------------------------------------


class EspeakSynthesizer:
    """`Synthesizer` on libespeak-ng: one sentence -> PCM16 at the asked rate + OVR visemes."""

    def __init__(self, *, rate_wpm: int = DEFAULT_WPM, default_voice: str = DEFAULT_VOICE) -> None:
        self.rate_wpm = rate_wpm
        self.default_voice = default_voice

    def _voice(self, voice: str) -> str:
        resolved = resolve_voice(voice) if voice else None
        if resolved is None:
            if voice and voice not in _WARNED:
                _WARNED.add(voice)
                log.warning("no espeak-ng voice %r, using %r", voice, self.default_voice)
            resolved = resolve_voice(self.default_voice) or self.default_voice
        return resolved

    def _speak(self, text: str, voice: str) -> tuple[bytes, int, list[tuple[str, int]]]:
        """Blocking: runs on the espeak worker thread."""
        name = self._voice(voice)
        with _LOCK:
            engine = _engine()
            pcm, events = engine.speak(text, name, self.rate_wpm)
            return pcm, engine.sample_rate, events

    async def _native(self, text: str, voice: str) -> tuple[bytes, int, list[tuple[str, int]]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_executor(), self._speak, text, voice)

    async def synthesize_native(self, text: str, *, voice: str) -> Speech:
        """Speech at espeak-ng's own rate (22050 Hz), exactly as it synthesized it."""
        text = clean_text(text)
        if not text:
            loop = asyncio.get_running_loop()
            return Speech(b"", await loop.run_in_executor(_executor(), native_rate), ())
        pcm, rate, events = await self._native(text, voice)
        return Speech(pcm, rate, viseme_track(events, end_ms=len(pcm) * 1000 // (2 * rate)))

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
        duration = len(pcm) * 1000 // (2 * sample_rate)
        return Speech(pcm, sample_rate, viseme_track(events, end_ms=duration))


__all__ = [
    "DEFAULT_VOICE",
    "MAX_CHARS",
    "ROLE_VOICES",
    "EspeakSynthesizer",
    "SynthesisError",
    "VoiceInfo",
    "clean_text",
    "espeak_available",
    "installed_voices",
    "native_rate",
    "resample",
    "resample_pcm",
    "resolve_voice",
    "voice_for",
]
