"""PCM16 mono sample-rate conversion: streaming for the live relay, whole-buffer for speech.

Both run on FFmpeg's libswresample through PyAV (already parleyd's media library): a 32-tap
Kaiser-windowed sinc with 1024 phases, about 85 dB SNR on a 1 kHz tone and a stop band under
-90 dB, at 10-15 us per 20 ms chunk. python-soxr was measured too: as good a filter, but its
streaming output comes in bursts (nothing for one 20 ms chunk, 40 ms for the next) unless its
quick, unfiltered mode is used. `audioop.ratecv`, used before, does not filter (going from 48
to 16 kHz, a 9.6 kHz tone came out at 6.4 kHz at full level) and is gone in Python 3.13.

`Resampler` is stateful: one per stream, fed chunks in order. A sinc filter needs to see a few
samples past the one it computes (16 at the lower rate, at most 2 ms), so the stream starts with
that much silence in their place: each chunk's output, the first included, is its input length
times the ratio, and the running total stays within one sample of the exact ratio. Only chunks
shorter than the filter (under about 2 ms) can make the first few outputs lag, by at most that
look-ahead, until the filter has filled.

`resample` and `resample_pcm` convert a whole buffer with no delay: output sample k is the input
signal at time k / to_rate, and n input samples give exactly ceil(n * to_rate / from_rate).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from parleyd.audio._av import mono_s16_bytes, mono_s16_frame, mono_s16_resampler
from parleyd.audio.pcm import SAMPLE_BYTES, PcmBytes, Samples, to_pcm, to_samples

# libswresample's look-ahead is 16 samples at the lower rate; twice that much trailing silence
# pushes the last input samples through the filter (its flush alone emits nothing at all for an
# input shorter than the filter).
_TAIL_SAMPLES = 32


def _check_rates(from_rate: int, to_rate: int) -> None:
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, not {from_rate} and {to_rate}")


def _check_even(pcm: PcmBytes) -> None:
    if len(pcm) % SAMPLE_BYTES:
        raise ValueError(f"PCM16 needs an even number of bytes, not {len(pcm)}")


def resampled_length(samples: int, from_rate: int, to_rate: int) -> int:
    """Samples that `resample` makes of `samples` input samples: ceil(samples * ratio)."""
    _check_rates(from_rate, to_rate)
    return -(-samples * to_rate // from_rate)


@functools.lru_cache(maxsize=64)
def _lead_in(from_rate: int, to_rate: int) -> int:
    """Output samples a fresh stream holds back before its first one: the filter's look-ahead.

    Measured rather than derived from libswresample's settings, which PyAV does not expose: at
    least 100 ms of silence whose length converts to a whole number of output samples goes in,
    and the output samples that do not come out are the look-ahead.
    """
    g = math.gcd(from_rate, to_rate)
    blocks = math.ceil(from_rate / 10 / (from_rate // g))
    swr = mono_s16_resampler(to_rate)
    silence = bytes(blocks * (from_rate // g) * SAMPLE_BYTES)
    out = mono_s16_bytes(swr.resample(mono_s16_frame(silence, from_rate)))
    return max(0, blocks * (to_rate // g) - len(out) // SAMPLE_BYTES)


class Resampler:
    """A PCM16 mono stream from `from_rate` to `to_rate`, chunk by chunk, with the filter's state
    kept between chunks so that their boundaries do not click. Same-rate audio passes through
    unchanged; an empty chunk gives b""; a chunk of an odd number of bytes raises ValueError
    (callers check PCM16 lengths at the edge).

    The output is the delay-free conversion of the whole stream (`resample_pcm`) behind a lead-in
    of silence as long as the filter's look-ahead, whatever the chunking.
    """

    __slots__ = ("_given", "_owed", "_swr", "_taken", "from_rate", "to_rate")

    def __init__(self, from_rate: int, to_rate: int) -> None:
        _check_rates(from_rate, to_rate)
        self.from_rate = from_rate
        self.to_rate = to_rate
        same = from_rate == to_rate
        self._swr = None if same else mono_s16_resampler(to_rate)
        self._owed = 0 if same else _lead_in(from_rate, to_rate)  # lead-in not yet given
        self._taken = 0  # input samples, counted only during the lead-in
        self._given = 0  # output samples, counted only during the lead-in

    def convert(self, pcm: PcmBytes) -> bytes:
        _check_even(pcm)
        if self._swr is None or not pcm:
            return bytes(pcm)
        frame = mono_s16_frame(bytes(pcm), self.from_rate)  # bytes(b) is b: no copy
        out = mono_s16_bytes(self._swr.resample(frame))
        if self._owed:
            # Silence stands in for what the filter holds back, so that every chunk, the first
            # ones included, keeps to the ratio. It must all precede the first real sample.
            self._taken += len(pcm) // SAMPLE_BYTES
            if out:
                pad = self._owed
            else:
                due = self._taken * self.to_rate // self.from_rate
                pad = min(self._owed, max(0, due - self._given))
            self._owed -= pad
            self._given += pad + len(out) // SAMPLE_BYTES
            out = bytes(pad * SAMPLE_BYTES) + out
        return out


def resample_pcm(pcm: PcmBytes, from_rate: int, to_rate: int) -> bytes:
    """A whole PCM16 mono buffer from one rate to another, with no delay (see the module doc)."""
    _check_rates(from_rate, to_rate)
    _check_even(pcm)
    if from_rate == to_rate or not pcm:
        return bytes(pcm)
    n_out = resampled_length(len(pcm) // SAMPLE_BYTES, from_rate, to_rate)
    tail = math.ceil(_TAIL_SAMPLES * from_rate / min(from_rate, to_rate))
    swr = mono_s16_resampler(to_rate)
    frames = swr.resample(mono_s16_frame(bytes(pcm) + bytes(tail * SAMPLE_BYTES), from_rate))
    out = mono_s16_bytes(frames + swr.resample(None))
    return out[: n_out * SAMPLE_BYTES].ljust(n_out * SAMPLE_BYTES, b"\0")


def resample(samples: Samples, from_rate: int, to_rate: int) -> Samples:
    """`resample_pcm` for an int16 array; the result is a new, writable array."""
    out = to_samples(resample_pcm(to_pcm(samples), from_rate, to_rate))
    return np.array(out, dtype=np.int16)  # a copy: a view of the bytes would be read-only


__all__ = ["Resampler", "resample", "resample_pcm", "resampled_length"]
