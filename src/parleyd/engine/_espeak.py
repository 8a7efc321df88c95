"""libespeak-ng through ctypes: loading the library, one synthesis, and the one thread it runs on.

Why the library rather than the ``espeak-ng`` command (measured on espeak-ng 1.51, Debian):

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
thread-safe: every call into it holds `LOCK`, and synthesis runs on `executor()`'s one worker
thread, never on the event loop. User text is handed to ``espeak_Synth`` as a UTF-8 buffer, never
through a command line, without the SSML and ``[[...]]`` phoneme-input flags, so markup, quotes,
dashes or ``--help`` are simply read out. A synthesis is bounded to ``MAX_AUDIO_S`` of audio.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger("parleyd.engine.tts")

MAX_AUDIO_S = 120


class SynthesisError(RuntimeError):
    """espeak-ng could not be loaded or failed to speak."""


class LibraryUnavailable(SynthesisError):
    """libespeak-ng is not installed here, or will not load: `reason` says so in a few words
    ("libespeak-ng.so.1 not found")."""

    def __init__(self, problems: list[str]) -> None:
        self.reason = "; ".join(dict.fromkeys(problems)) or "libespeak-ng not found"
        super().__init__("libespeak-ng not usable: " + self.reason)


# -- speak_lib.h, API revision 12 ---------------------------------------------------------------

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
    """A voice as ``espeak_ListVoices`` reports it."""

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
    unique: dict[str, str | None] = {}
    for path, data in found:  # find_library often names the same file as the fallback
        unique.setdefault(path, data)
    return list(unique.items())


def _unloadable(path: str, exc: OSError) -> str:
    """Why `path` did not load, in a few words: "libespeak-ng.so.1 not found", or
    "libespeak-ng.so.1 will not load (file too short)" for a damaged or foreign file."""
    text = str(exc)
    if "cannot open shared object file" in text:
        return f"{path} not found"
    head, sep, detail = text.partition(": ")  # the loader names the file it tried first
    if sep and ("/" in head or head == path):
        text = detail
    return f"{path} will not load ({text})"


class Espeak:
    """The process's one libespeak-ng. Every method must be called holding `LOCK`."""

    def __init__(self) -> None:
        errors: list[str] = []
        for path, data in _library_candidates():
            try:
                lib = ctypes.CDLL(path)
            except OSError as exc:
                errors.append(_unloadable(path, exc))
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
            raise LibraryUnavailable(errors)
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
        """PCM16 at `sample_rate` and the phoneme events (name, ms) of one synthesis."""
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


LOCK = threading.Lock()
_EXECUTOR_LOCK = threading.Lock()
_ENGINE: Espeak | None = None
_FAILED: SynthesisError | None = None
_EXECUTOR: ThreadPoolExecutor | None = None
_T = TypeVar("_T")


def engine() -> Espeak:
    """The loaded library (loading it on first use). Call holding `LOCK`."""
    global _ENGINE, _FAILED
    if _ENGINE is None:
        if _FAILED is not None:
            raise _FAILED
        try:
            _ENGINE = Espeak()
        except SynthesisError as exc:
            _FAILED = exc
            raise
    return _ENGINE


def locked(fn: Callable[[Espeak], _T]) -> _T:
    """`fn` applied to the library, holding `LOCK`."""
    with LOCK:
        return fn(engine())


def executor() -> ThreadPoolExecutor:
    """The one worker thread that synthesizes, so that a synthesis never blocks the event loop."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:  # not LOCK: a synthesis in flight must not stall the event loop
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        return _EXECUTOR


__all__ = [
    "LOCK",
    "MAX_AUDIO_S",
    "Espeak",
    "LibraryUnavailable",
    "SynthesisError",
    "VoiceInfo",
    "engine",
    "executor",
    "locked",
]
