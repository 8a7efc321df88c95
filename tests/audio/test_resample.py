"""Sample-rate conversion: the whole-buffer path's filter quality, the streaming path's chunking,
lengths, delay and round-trip quality, and the edge cases of both."""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt
import pytest

from parleyd.audio import Resampler, resample, resample_pcm, resampled_length, to_samples

# Streaming adds libswresample's look-ahead, 16 samples at the lower rate: at most 2 ms at 8 kHz.
MAX_DELAY_MS = 2


def tone(freq: float, rate: int, seconds: float, amp: float = 16000) -> npt.NDArray[np.int16]:
    t = np.arange(round(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)


def rms(x: npt.NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def snr_db(out: npt.NDArray[np.float64], ref: npt.NDArray[np.float64]) -> float:
    return float(10 * np.log10(np.mean(ref**2) / np.mean((out - ref) ** 2)))


def stream(rs: Resampler, pcm: bytes, sizes: list[int]) -> list[bytes]:
    """`pcm` through `rs` in chunks of `sizes` samples (cycled), one output per chunk."""
    out: list[bytes] = []
    pos = 0
    k = 0
    while pos < len(pcm):
        step = 2 * sizes[k % len(sizes)]
        out.append(rs.convert(pcm[pos : pos + step]))
        pos += step
        k += 1
    return out


# -- whole buffer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100, 48_000])
def test_resampling_quality(rate: int) -> None:
    fs = 22_050
    t = np.arange(fs * 2) / fs
    out = resample(tone(1000, fs, 2), fs, rate).astype(np.float64)
    assert len(out) == 2 * rate
    ref = np.sin(2 * np.pi * 1000 * np.arange(len(out)) / rate) * 16000
    inner = slice(rate // 10, -rate // 10)  # away from the edges
    assert snr_db(out[inner], ref[inner]) > 60
    if rate < fs:  # a tone above the new Nyquist frequency is filtered out, not aliased
        high = (np.sin(2 * np.pi * 0.6 * rate * t) * 16000).astype(np.int16)
        leak = resample(high, fs, rate).astype(np.float64)[inner]
        assert 20 * np.log10(max(rms(leak), 1e-9) / 11_314) < -60


@pytest.mark.parametrize("n", [1, 2, 7, 100, 441, 1001, 22_050])
@pytest.mark.parametrize(("fr", "to"), [(22_050, 48_000), (48_000, 16_000), (16_000, 24_000)])
def test_whole_buffer_length(n: int, fr: int, to: int) -> None:
    x = np.full(n, 8000, dtype=np.int16)
    out = resample(x, fr, to)
    assert len(out) == resampled_length(n, fr, to) == -(-n * to // fr)
    # Even an input shorter than the filter comes out, not as silence.
    assert out.max() > 1000
    assert len(resample_pcm(x.tobytes(), fr, to)) == 2 * len(out)


def test_whole_buffer_edges() -> None:
    x = tone(440, 16_000, 0.1)
    same = resample(x, 16_000, 16_000)
    assert np.array_equal(same, x)
    assert same is not x
    out = resample(x, 16_000, 48_000)
    out[0] = 1  # a writable array of its own
    assert len(resample(np.zeros(0, dtype=np.int16), 16_000, 48_000)) == 0
    assert resample_pcm(b"", 16_000, 48_000) == b""
    assert resample_pcm(x.tobytes(), 16_000, 16_000) == x.tobytes()
    with pytest.raises(ValueError, match="even"):
        resample_pcm(b"\x01\x02\x03", 16_000, 48_000)
    with pytest.raises(ValueError, match="positive"):
        resample(x, 0, 16_000)
    with pytest.raises(ValueError, match="positive"):
        resample_pcm(x.tobytes(), 16_000, -1)


# -- streaming ------------------------------------------------------------------------------------

PAIRS = [(48_000, 16_000), (16_000, 48_000), (22_050, 48_000), (22_050, 16_000), (8_000, 48_000)]


@pytest.mark.parametrize(("fr", "to"), PAIRS)
def test_chunked_equals_one_shot(fr: int, to: int) -> None:
    """Chunk boundaries leave no trace: any chunking gives the samples of one big call."""
    x = (tone(440, fr, 1.0, 10_000) + tone(3000, fr, 1.0, 5_000)).tobytes()
    whole = Resampler(fr, to).convert(x)
    rng = random.Random(7)
    sizes = [rng.randint(1, fr // 10) for _ in range(50)]
    for chunking in ([fr // 100], [fr // 50], [fr // 10], sizes):
        chunked = b"".join(stream(Resampler(fr, to), x, chunking))
        a, b = to_samples(chunked).astype(int), to_samples(whole).astype(int)
        assert abs(len(a) - len(b)) <= 1
        n = min(len(a), len(b))
        assert np.abs(a[:n] - b[:n]).max() <= 1


@pytest.mark.parametrize(("fr", "to"), PAIRS)
def test_stream_is_the_whole_buffer_delayed(fr: int, to: int) -> None:
    """The stream is the delay-free conversion behind a short lead-in of silence."""
    x = tone(440, fr, 0.5, 10_000) + 3000  # never zero: the lead-in is the only silence
    out = to_samples(b"".join(stream(Resampler(fr, to), x.tobytes(), [fr // 50]))).astype(int)
    ref = resample(x, fr, to).astype(int)
    lead = int(np.argmax(out != 0))
    assert 0 < lead <= to * MAX_DELAY_MS // 1000
    n = len(out) - lead
    assert np.abs(out[lead:] - ref[:n]).max() <= 1


@pytest.mark.parametrize(("fr", "to"), PAIRS)
@pytest.mark.parametrize("chunk_ms", [10, 20, 100])
def test_stream_lengths_follow_the_ratio(fr: int, to: int, chunk_ms: int) -> None:
    n = fr * chunk_ms // 1000
    x = tone(440, fr, 100 * n / fr, 10_000).tobytes()
    rs = Resampler(fr, to)
    total_in = total_out = 0
    for k, out in enumerate(stream(rs, x, [n])):
        total_in += n
        total_out += len(out) // 2
        assert len(out) % 2 == 0
        # every chunk, the first included, is its input length times the ratio
        assert abs(len(out) // 2 - n * to / fr) <= 1, k
        # and the running total never drifts from the exact ratio
        assert abs(total_out - total_in * to // fr) <= 1, k
    assert total_in == 100 * n


def test_round_trip_48k_16k_48k() -> None:
    """A 1 kHz tone relayed 48 kHz -> 16 kHz -> 48 kHz keeps an SNR above 60 dB."""
    x = tone(1000, 48_000, 2.0)
    down, up = Resampler(48_000, 16_000), Resampler(16_000, 48_000)
    out = b"".join(up.convert(c) for c in stream(down, x.tobytes(), [960]))
    y = to_samples(out).astype(np.float64)
    assert abs(len(y) - len(x)) <= 3
    inner = slice(4_800, len(y) - 4_800)

    def snr_at(delay: int) -> float:
        ref = np.sin(2 * np.pi * 1000 * (np.arange(len(y)) - delay) / 48_000) * 16000
        return snr_db(y[inner], ref[inner])

    # Two look-aheads: 16 samples at 16 kHz each way, 2 x 48 samples at 48 kHz.
    delay = max(range(2 * 48 * MAX_DELAY_MS + 1), key=snr_at)
    assert delay <= 2 * 48 * MAX_DELAY_MS
    assert snr_at(delay) > 60


@pytest.mark.parametrize("rate", [8_000, 16_000, 48_000])
def test_same_rate_is_identity(rate: int) -> None:
    rs = Resampler(rate, rate)
    x = tone(440, rate, 0.02).tobytes()
    assert rs.convert(x) == x
    assert rs.convert(bytearray(x)) == x
    assert rs.convert(b"") == b""


def test_empty_and_odd_chunks() -> None:
    x = tone(440, 48_000, 0.1).tobytes()
    rs = Resampler(48_000, 16_000)
    assert rs.convert(b"") == b""  # nothing in, nothing out, no state changed
    with pytest.raises(ValueError, match="even"):
        rs.convert(b"\x00\x01\x02")
    assert rs.convert(x) == Resampler(48_000, 16_000).convert(x)
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 16_000)
    with pytest.raises(ValueError, match="positive"):
        Resampler(16_000, -8_000)


def test_a_single_sample_at_a_time() -> None:
    """Chunks shorter than the filter: until it has filled (within 5 ms of input) the output may
    lag by up to the look-ahead; then it keeps to the ratio, and the samples are the same."""
    x = tone(440, 16_000, 0.05, 10_000).tobytes()
    rs = Resampler(16_000, 48_000)
    total = 0
    for k in range(len(x) // 2):
        total += len(rs.convert(x[2 * k : 2 * k + 2])) // 2
        lag = 3 * (k + 1) - total
        assert -1 <= lag <= 48 * MAX_DELAY_MS
        if k >= 16 * 5:
            assert abs(lag) <= 1, k
    one_by_one = b"".join(stream(Resampler(16_000, 48_000), x, [1]))
    assert one_by_one == Resampler(16_000, 48_000).convert(x)
