"""Audio for parleyd: PCM16 mono bytes, their conversion and their sample-rate conversion.

`pcm` holds the byte/array/length helpers; `resample` the streaming `Resampler` (the live
relay between participants of different rates) and the whole-buffer `resample` (speech
synthesis); `frames` turns decoded WebRTC frames into PCM16. Resampling and frame conversion run
on FFmpeg's libswresample through PyAV.
"""

from parleyd.audio.frames import FrameConverter
from parleyd.audio.pcm import (
    SAMPLE_BYTES,
    PcmBytes,
    Samples,
    chunk_bytes,
    downmix,
    downmix_pcm,
    duration_ms,
    from_width,
    sample_count,
    to_pcm,
    to_samples,
)
from parleyd.audio.resample import Resampler, resample, resample_pcm, resampled_length

__all__ = [
    "SAMPLE_BYTES",
    "FrameConverter",
    "PcmBytes",
    "Resampler",
    "Samples",
    "chunk_bytes",
    "downmix",
    "downmix_pcm",
    "duration_ms",
    "from_width",
    "resample",
    "resample_pcm",
    "resampled_length",
    "sample_count",
    "to_pcm",
    "to_samples",
]
