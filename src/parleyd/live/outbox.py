"""A participant's bounded outbox: the room never waits for a slow reader.

When full, the oldest media frame (audio, video, visemes) is dropped and counted; the reader is
told how many with a FRAMES_DROPPED event before its next frame. Control frames (opened, errors,
close) always get in, so a stream can always be closed. Memory is bounded by `capacity` plus the
few control frames of one stream's life.
"""

from __future__ import annotations

import asyncio
from collections import deque

from parleyd.live.frames import Close, Event, EventType, Kind, OutFrame

_DROPPABLE = frozenset({Kind.AUDIO, Kind.VIDEO, Kind.VISEMES})


class Outbox:
    def __init__(self, capacity: int = 256) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self.capacity = capacity
        self._frames: deque[OutFrame] = deque()
        self._ready = asyncio.Event()
        self._dropped_unreported = 0
        self.dropped_total = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: OutFrame) -> None:
        """Queues `frame` without ever blocking; drops old media when full."""
        if self.closed:
            return
        if isinstance(frame, Close):
            self.closed = True
        elif (
            frame.kind != Kind.CONTROL
            and len(self._frames) >= self.capacity
            and not self._drop_oldest_media()
        ):
            if frame.kind in _DROPPABLE:
                self._count_drop()
                return
            self._drop_oldest_droppable_any()
        self._frames.append(frame)
        self._ready.set()

    def _count_drop(self) -> None:
        self._dropped_unreported += 1
        self.dropped_total += 1

    def _drop_oldest_media(self) -> bool:
        for i, f in enumerate(self._frames):
            if f.kind in _DROPPABLE:
                del self._frames[i]
                self._count_drop()
                return True
        return False

    def _drop_oldest_droppable_any(self) -> None:
        # Full of text/events from a reader that stopped reading: drop the oldest non-control.
        for i, f in enumerate(self._frames):
            if f.kind != Kind.CONTROL:
                del self._frames[i]
                self._count_drop()
                return

    async def get(self) -> OutFrame:
        """The next frame; a FRAMES_DROPPED report comes first when frames were lost."""
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        if self._dropped_unreported and not isinstance(self._frames[0], Close):
            count, self._dropped_unreported = self._dropped_unreported, 0
            return Event(EventType.FRAMES_DROPPED, count=count)
        frame = self._frames.popleft()
        return frame
