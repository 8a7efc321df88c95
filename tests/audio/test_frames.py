"""Decoded frames of any format, layout and rate -> PCM16 mono at the asked rate."""

from __future__ import annotations

import av
import numpy as np
import pytest

from parleyd.audio import FrameConverter, to_samples


def s16_stereo(left: np.ndarray, right: np.ndarray, rate: int = 48_000) -> av.AudioFrame:
    packed = np.stack([left, right], axis=1).reshape(1, -1).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(packed, format="s16", layout="stereo")
    frame.sample_rate = rate
    return frame


def test_opus_shaped_frames_become_the_channel_mean() -> None:
    """What aiortc decodes a browser's Opus to: s16 stereo 48 kHz, 960 samples."""
    conv = FrameConverter(48_000)
    left = np.full(960, 10_000, dtype=np.int16)
    right = np.full(960, -2_000, dtype=np.int16)
    out = b"".join(conv.convert(s16_stereo(left, right)) for _ in range(5))
    samples = to_samples(out)
    assert len(samples) == 5 * 960  # same rate: no delay, no loss
    assert np.all(samples == 4_000)


def test_mono_s16_at_the_rate_passes_through() -> None:
    conv = FrameConverter(16_000)
    x = (np.arange(320) * 97 % 65536 - 32768).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 16_000
    assert conv.convert(frame) == x.tobytes()


def test_planar_float_at_another_rate() -> None:
    conv = FrameConverter(48_000)
    t = np.arange(441) / 44_100
    total = 0
    for k in range(100):
        wave = np.sin(2 * np.pi * 440 * (t + k * 0.01)).astype(np.float32) * 0.5
        frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
        frame.sample_rate = 44_100
        out = to_samples(conv.convert(frame))
        total += len(out)
    assert abs(total - 48_000) <= 48  # 1 s, less the filter's look-ahead (1 ms)
    assert 15_000 < np.abs(out).max() <= 16_400  # 0.5 full scale


def test_a_change_of_format_mid_stream() -> None:
    conv = FrameConverter(48_000)
    left = np.full(960, 1000, dtype=np.int16)
    assert len(conv.convert(s16_stereo(left, left, 48_000))) == 2 * 960
    mono = av.AudioFrame.from_ndarray(np.full((1, 320), 500, np.int16), format="s16", layout="mono")
    mono.sample_rate = 16_000
    out = to_samples(conv.convert(mono))
    assert 800 < len(out) <= 960
    with pytest.raises(ValueError, match="positive"):
        FrameConverter(0)
