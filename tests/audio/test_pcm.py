"""PCM16 helpers: lossless bytes/array round trips, downmixing, length arithmetic."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

from parleyd.audio import pcm


def test_bytes_and_samples_round_trip_exactly() -> None:
    values = [0, 1, -1, 32767, -32768, 12345, -23456]
    raw = struct.pack(f"<{len(values)}h", *values)
    samples = pcm.to_samples(raw)
    assert samples.dtype == np.int16
    assert samples.tolist() == values
    assert pcm.to_pcm(samples) == raw
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert np.array_equal(pcm.to_samples(pcm.to_pcm(every)), every)
    assert pcm.to_pcm(pcm.to_samples(bytearray(raw))) == raw
    assert pcm.to_samples(memoryview(raw)).tolist() == values


def test_samples_are_a_view_without_a_copy() -> None:
    raw = bytes(range(16))
    samples = pcm.to_samples(raw)
    if sys.byteorder == "little":
        assert not samples.flags.writeable  # a view of the immutable bytes


def test_empty_and_odd() -> None:
    assert len(pcm.to_samples(b"")) == 0
    assert pcm.to_pcm(np.zeros(0, dtype=np.int16)) == b""
    with pytest.raises(ValueError, match="even"):
        pcm.to_samples(b"\x00\x01\x02")


def test_to_pcm_takes_wider_integers_in_range() -> None:
    assert pcm.to_pcm(np.array([1, -2, 32767], dtype=np.int64)) == struct.pack("<3h", 1, -2, 32767)
    with pytest.raises(ValueError, match="range"):
        pcm.to_pcm(np.array([40_000], dtype=np.int32))


def test_stereo_downmix_is_the_mean() -> None:
    left = np.array([1000, -1000, 32767, -32768, 3, 0], dtype=np.int16)
    right = np.array([3000, 1000, 32767, -32768, 0, -1], dtype=np.int16)
    want = [2000, 0, 32767, -32768, 2, 0]  # 1.5 and -0.5 round half to even
    interleaved = np.stack([left, right], axis=1).reshape(-1)
    assert pcm.downmix(interleaved, 2).tolist() == want
    assert pcm.downmix(np.concatenate([left, right]), 2, planar=True).tolist() == want
    # 2-D as decoders give it: (channels, n) planar, (n, channels) packed
    assert pcm.downmix(np.stack([left, right]), 2, planar=True).tolist() == want
    assert pcm.downmix(np.stack([left, right], axis=1), 2).tolist() == want
    assert pcm.downmix_pcm(pcm.to_pcm(interleaved), 2) == pcm.to_pcm(np.array(want, np.int16))


def test_downmix_of_mono_and_many_channels() -> None:
    mono = np.array([5, -7, 9], dtype=np.int16)
    assert np.array_equal(pcm.downmix(mono, 1), mono)
    six = np.tile(np.array([600, 0, 0, 0, 0, 0], dtype=np.int16), 4)
    assert pcm.downmix(six, 6).tolist() == [100] * 4
    with pytest.raises(ValueError, match="split"):
        pcm.downmix(np.zeros(5, dtype=np.int16), 2)
    with pytest.raises(ValueError, match="at least 1"):
        pcm.downmix(mono, 0)


def test_length_arithmetic() -> None:
    assert pcm.chunk_bytes(48_000, 20) == 1_920
    assert pcm.chunk_bytes(16_000, 20) == 640
    assert pcm.chunk_bytes(22_050, 10) == 440  # 220.5 samples: whole ones only
    assert pcm.chunk_bytes(22_050, 10) % pcm.SAMPLE_BYTES == 0
    one_second = bytes(2 * 16_000)
    assert pcm.sample_count(one_second) == 16_000
    assert pcm.duration_ms(one_second, 16_000) == 1_000
    assert pcm.duration_ms(one_second[:-2], 16_000) == 999  # rounded down
    assert pcm.duration_ms(b"", 8_000) == 0
    assert pcm.sample_count(b"\x00\x00\x00") == 1


def test_wav_sample_widths_narrow_to_16_bits() -> None:
    values = [0, 1, -1, 32767, -32768, 1234]
    want = struct.pack(f"<{len(values)}h", *values)
    assert pcm.from_width(want, 2) == want
    # 24 and 32-bit: the same values in the top bytes, anything in the low ones
    wide24 = b"".join(b"\x7f" + struct.pack("<h", v) for v in values)
    wide32 = b"".join(b"\xff\x00" + struct.pack("<h", v) for v in values)
    assert pcm.from_width(wide24, 3) == want
    assert pcm.from_width(wide32, 4) == want
    # 8-bit WAV is unsigned, centred on 128
    assert pcm.to_samples(pcm.from_width(bytes([128, 129, 127, 255, 0]), 1)).tolist() == [
        0,
        256,
        -256,
        32512,
        -32768,
    ]
    with pytest.raises(ValueError, match="whole"):
        pcm.from_width(b"\x00" * 5, 3)
    with pytest.raises(ValueError, match="whole"):
        pcm.from_width(b"\x00" * 3, 2)
    with pytest.raises(ValueError, match="40-bit"):
        pcm.from_width(b"\x00" * 5, 5)
