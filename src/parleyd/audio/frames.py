"""Decoded audio frames (PyAV `av.AudioFrame`) -> PCM16 mono: what a WebRTC peer receives.

A browser's Opus decodes to s16 stereo 48 kHz today, but nothing in WebRTC promises that; the
converter takes any sample format, channel layout and rate, and mixes down and resamples with
libswresample (stereo to mono is the mean of the two channels).
"""

from __future__ import annotations

import av

from parleyd.audio._av import mono_s16_bytes, mono_s16_resampler


class FrameConverter:
    """Frames of one stream in, PCM16 mono bytes at `rate` out, with the resampler's state kept
    across frames. When the stream's format, layout or rate changes, the old resampler is
    flushed (its last samples are not lost) and a new one takes over."""

    __slots__ = ("_resampler", "_source", "rate")

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise ValueError(f"the sample rate must be positive, not {rate}")
        self.rate = rate
        self._resampler: av.AudioResampler | None = None
        self._source: tuple[str, str, int] | None = None

    def convert(self, frame: av.AudioFrame) -> bytes:
        source = (frame.format.name, frame.layout.name, int(frame.sample_rate))
        done: list[av.AudioFrame] = []
        if source != self._source or self._resampler is None:
            if self._resampler is not None:
                done += self._resampler.resample(None)
            # PyAV's resampler takes its input settings from its first frame and refuses others.
            self._resampler = mono_s16_resampler(self.rate)
            self._source = source
        done += self._resampler.resample(frame)
        return mono_s16_bytes(done)


__all__ = ["FrameConverter"]
