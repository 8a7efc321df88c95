"""Outgoing media tracks of a browser peer: the AI's voice and the avatar's face.

aiortc's sender calls `recv()` again as soon as it returns, so each track paces itself: frame n
is released at `start + n * frame duration`. Both are fed by the peer's outbox drainer (`push`),
never block it, and hold a bounded amount: the voice at most `max_buffer_ms` (the oldest audio is
dropped past that), the face only its latest picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import io
import time

import av
from aiortc import MediaStreamTrack
from PIL import Image

AUDIO_RATE = 48_000
AUDIO_FRAME_MS = 20
AUDIO_FRAME_SAMPLES = AUDIO_RATE * AUDIO_FRAME_MS // 1000
_AUDIO_FRAME_BYTES = AUDIO_FRAME_SAMPLES * 2
VIDEO_CLOCK = 90_000
# A late sender (the loop was busy) catches up at most this far; beyond, the clock restarts.
_MAX_LATE_S = 0.5


class PacedAudioTrack(MediaStreamTrack):
    """PCM16 mono 48 kHz in (any chunking), 20 ms frames out in real time; silence when idle."""

    kind = "audio"

    def __init__(self, max_buffer_ms: int = 5_000) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._max_bytes = AUDIO_RATE * max_buffer_ms // 1000 * 2
        self._start: float | None = None
        self._pts = 0
        self.first_voiced_at: float | None = None  # monotonic time the first voice frame left

    def push(self, pcm: bytes) -> None:
        self._buffer += pcm
        excess = len(self._buffer) - self._max_bytes
        if excess > 0:
            excess += excess % 2
            del self._buffer[:excess]

    def flush(self) -> None:
        """Barge-in: what was not played yet is never played."""
        self._buffer.clear()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            from aiortc.mediastreams import MediaStreamError

            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._pts += AUDIO_FRAME_SAMPLES
            due = self._start + self._pts / AUDIO_RATE
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > _MAX_LATE_S:
                self._start = now - self._pts / AUDIO_RATE
        if len(self._buffer) >= _AUDIO_FRAME_BYTES:
            chunk = bytes(self._buffer[:_AUDIO_FRAME_BYTES])
            del self._buffer[:_AUDIO_FRAME_BYTES]
            if self.first_voiced_at is None:
                self.first_voiced_at = time.monotonic()
        elif self._buffer:
            chunk = bytes(self._buffer).ljust(_AUDIO_FRAME_BYTES, b"\0")
            self._buffer.clear()
        else:
            chunk = bytes(_AUDIO_FRAME_BYTES)
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_FRAME_SAMPLES)
        frame.planes[0].update(chunk)
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


class AvatarVideoTrack(MediaStreamTrack):
    """Avatar pictures (JPEG/PNG bytes) in, yuv420p frames out (VP8 by the sender).

    Only the latest picture is kept and decoded, at most `max_fps` a second. With no new picture
    the last one is repeated once a second (so the browser's decoder stays warm); before the
    first picture nothing is sent.
    """

    kind = "video"

    def __init__(self, max_fps: int = 15) -> None:
        super().__init__()
        self._latest: bytes | None = None
        self._fresh = asyncio.Event()
        self._last: av.VideoFrame | None = None
        self._period = 1 / max(1, max_fps)
        self._start: float | None = None
        self._next_at = 0.0

    def push(self, image: bytes) -> None:
        self._latest = image
        self._fresh.set()

    def _decode(self, image: bytes) -> av.VideoFrame | None:
        try:
            with Image.open(io.BytesIO(image)) as img:
                rgb = img.convert("RGB")
        except Exception:  # a broken picture from an AGENT: keep showing the last good one
            return None
        width, height = rgb.size
        if width % 2 or height % 2:  # yuv420p needs even sides
            rgb = rgb.crop((0, 0, width - width % 2, height - height % 2))
        frame: av.VideoFrame = av.VideoFrame.from_image(rgb).reformat(format="yuv420p")  # type: ignore[no-untyped-call]
        return frame

    async def recv(self) -> av.VideoFrame:
        while True:
            if self.readyState != "live":
                from aiortc.mediastreams import MediaStreamError

                raise MediaStreamError
            now = time.monotonic()
            if self._next_at > now:
                await asyncio.sleep(self._next_at - now)
            with contextlib.suppress(TimeoutError):  # no new picture: repeat the last one
                await asyncio.wait_for(self._fresh.wait(), 1.0 if self._last is not None else None)
            if self._fresh.is_set():
                self._fresh.clear()
                image, self._latest = self._latest, None
                decoded = self._decode(image) if image is not None else None
                if decoded is not None:
                    self._last = decoded
            if self._last is None:
                continue
            now = time.monotonic()
            if self._start is None:
                self._start = now
            self._next_at = now + self._period
            frame = av.VideoFrame.from_ndarray(self._last.to_ndarray(), format="yuv420p")
            frame.pts = int((now - self._start) * VIDEO_CLOCK)
            frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            return frame
