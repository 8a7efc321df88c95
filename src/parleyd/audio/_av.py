"""The one place that drives FFmpeg's libswresample (through PyAV) for `parleyd.audio`.

PyAV's `av.AudioResampler` keeps a filter graph (and so the resampler's filter history) across
frames, which is what lets the streaming converters avoid clicks at chunk boundaries. The
helpers here move PCM16 mono bytes in and out of `av.AudioFrame` without going through numpy: on
a 20 ms chunk the conversion work is a few microseconds, and per-call overhead dominates.
"""

from __future__ import annotations

from collections.abc import Iterable

import av

# FFmpeg's s16 is native-endian, which is PCM16's little-endian on every host parleyd runs on.
_FORMAT = "s16"
_LAYOUT = "mono"


def mono_s16_frame(pcm: bytes, rate: int) -> av.AudioFrame:
    """A PCM16 mono frame holding `pcm` (little-endian, even length) at `rate`."""
    frame = av.AudioFrame(format=_FORMAT, layout=_LAYOUT, samples=len(pcm) // 2)
    frame.planes[0].update(pcm)
    frame.sample_rate = rate
    return frame


def mono_s16_bytes(frames: Iterable[av.AudioFrame]) -> bytes:
    """The samples of PCM16 mono frames, joined; a plane may be longer than its samples."""
    parts = [memoryview(f.planes[0])[: f.samples * 2] for f in frames]
    if len(parts) == 1:
        return parts[0].tobytes()
    return b"".join(parts)


def mono_s16_resampler(rate: int) -> av.AudioResampler:
    """A streaming converter of any frame (format, layout, rate) to PCM16 mono at `rate`."""
    # libswresample's defaults (32-tap Kaiser-windowed sinc, 1024 phases) give about 85 dB SNR on
    # a tone, a stop band under -90 dB and 16 samples of look-ahead at the lower rate; a longer
    # filter or float arithmetic measured within 1 dB of that, for more delay or cost.
    return av.AudioResampler(format=_FORMAT, layout=_LAYOUT, rate=rate)
