"""PCM16 helpers: the one audio format parleyd moves around (little-endian, signed, mono).

Bytes and numpy arrays convert both ways without loss; 8, 24 and 32-bit WAV samples narrow to
16 bits; several channels (interleaved as in a WAV file, or planar as FFmpeg decodes them) mix
down to mono by averaging; and durations and lengths are whole samples, so a chunk of
`chunk_bytes(rate, ms)` always holds complete samples.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_BYTES = 2

PcmBytes = bytes | bytearray | memoryview
Samples = npt.NDArray[np.int16]


def to_samples(pcm: PcmBytes) -> Samples:
    """PCM16 bytes -> int16 samples. A read-only view of `pcm` (no copy) on little-endian hosts.

    Raises ValueError when `pcm` does not hold a whole number of samples.
    """
    if len(pcm) % SAMPLE_BYTES:
        raise ValueError(f"PCM16 needs an even number of bytes, not {len(pcm)}")
    # astype(copy=False) only copies on a big-endian host, where "<i2" is not the native int16.
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=False)


def to_pcm(samples: npt.NDArray[np.integer]) -> bytes:
    """Integer samples (int16 range) -> PCM16 bytes. Out-of-range values raise ValueError."""
    if samples.dtype != np.int16:
        if samples.size and (samples.min() < -32768 or samples.max() > 32767):
            raise ValueError("samples out of the int16 range")
        samples = samples.astype(np.int16)
    return samples.astype("<i2", copy=False).tobytes()


def from_width(raw: PcmBytes, width: int) -> bytes:
    """Linear PCM of `width` bytes a sample, as WAV files store it (8-bit unsigned, 16/24/32-bit
    signed little-endian) -> PCM16, keeping the 16 most significant bits of each sample."""
    if width not in (1, 2, 3, 4):
        raise ValueError(f"no {8 * width}-bit linear PCM")
    if len(raw) % width:
        raise ValueError(f"{len(raw)} bytes are not whole {8 * width}-bit samples")
    if width == SAMPLE_BYTES:
        return bytes(raw)
    data = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width)
    if width == 1:
        wide = (data[:, 0].astype(np.int16) - 128) << 8
        return to_pcm(wide.astype(np.int16))
    # The top two bytes of a little-endian sample are its most significant 16 bits.
    return np.ascontiguousarray(data[:, width - 2 :]).tobytes()


def downmix(samples: Samples, channels: int, *, planar: bool = False) -> Samples:
    """Several channels -> mono, each output sample the mean of its channels (rounded half to
    even). `samples` is 1-D, interleaved (L R L R ...) or, with `planar`, one channel after the
    other (L L ... R R ...); 2-D input is taken as (channels, n) when planar, else (n, channels).
    """
    if channels < 1:
        raise ValueError("channels must be at least 1")
    flat: Samples = samples.reshape(-1)
    if flat.size % channels:
        raise ValueError(f"{flat.size} samples do not split into {channels} channels")
    if channels == 1:
        return flat.astype(np.int16)
    grid = flat.reshape(channels, -1) if planar else flat.reshape(-1, channels)
    # Summing in int64 is exact; the mean of int16 values is within int16, so no clipping.
    mean: npt.NDArray[np.float64] = grid.sum(axis=0 if planar else 1, dtype=np.int64) / channels
    return np.rint(mean).astype(np.int16)


def downmix_pcm(pcm: PcmBytes, channels: int) -> bytes:
    """`downmix` for interleaved PCM16 bytes (a WAV file's frames)."""
    return to_pcm(downmix(to_samples(pcm), channels))


def sample_count(pcm: PcmBytes) -> int:
    """Whole samples in `pcm` (a trailing odd byte is not one)."""
    return len(pcm) // SAMPLE_BYTES


def duration_ms(pcm: PcmBytes, rate: int) -> int:
    """How long `pcm` plays at `rate`, in whole milliseconds (rounded down)."""
    return sample_count(pcm) * 1000 // rate


def chunk_bytes(rate: int, ms: int) -> int:
    """Bytes of `ms` milliseconds at `rate`, in whole samples (rounded down)."""
    return rate * ms // 1000 * SAMPLE_BYTES


__all__ = [
    "SAMPLE_BYTES",
    "PcmBytes",
    "Samples",
    "chunk_bytes",
    "downmix",
    "downmix_pcm",
    "duration_ms",
    "from_width",
    "sample_count",
    "to_pcm",
    "to_samples",
]
