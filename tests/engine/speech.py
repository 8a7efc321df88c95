"""Test helper: real speech audio from espeak-ng, as 16-bit mono PCM at any rate.

`say()` runs `espeak-ng --stdout` (a WAV at the voice's own rate, 22050 Hz for the built-in
voices) and converts it with `parleyd.audio`, as parleyd converts audio itself: narrowed to 16
bits and mixed down to mono if need be, then resampled with the delay-free whole-buffer
`resample_pcm` (libswresample's windowed sinc). Results are cached per (text, rate, voice,
speed): tests and benchmarks say the same sentences many times.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave

from parleyd.audio import downmix_pcm, from_width, resample_pcm

ESPEAK = shutil.which("espeak-ng") or "/usr/bin/espeak-ng"


@functools.lru_cache(maxsize=256)
def say(text: str, rate: int = 16_000, voice: str = "en-us", speed: int = 160) -> bytes:
    """`text` spoken by espeak-ng `voice` at `speed` words per minute: PCM16 LE mono at `rate`."""
    wav = subprocess.run(
        [ESPEAK, "--stdout", "-v", voice, "-s", str(speed), text],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        width = w.getsampwidth()
        src_rate = w.getframerate()
        channels = w.getnchannels()
        raw = w.readframes(w.getnframes())
    pcm = downmix_pcm(from_width(raw, width), channels)
    return resample_pcm(pcm, src_rate, rate)


def silence(ms: int, rate: int = 16_000) -> bytes:
    return b"\x00\x00" * (rate * ms // 1000)


def ms_to_bytes(ms: float, rate: int = 16_000) -> int:
    return 2 * round(rate * ms / 1000)


def voiced_span(pcm: bytes, threshold: int = 300) -> tuple[int, int]:
    """(first, last+1) sample index whose amplitude exceeds `threshold`: where speech really is."""
    import numpy as np

    x = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    idx = np.flatnonzero(x > threshold)
    if idx.size == 0:
        return (0, 0)
    return (int(idx[0]), int(idx[-1]) + 1)


def trim(pcm: bytes, threshold: int = 300) -> bytes:
    """`pcm` without the silence espeak-ng puts before and after the speech."""
    first, last = voiced_span(pcm, threshold)
    return pcm[2 * first : 2 * last]
