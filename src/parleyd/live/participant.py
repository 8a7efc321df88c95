"""The one interface between the hub and a transport: a participant.

Frames in: the transport calls `room.receive(participant, frame)` with what its client sent.
Frames out: the room calls `participant.deliver(frame)`, which never blocks; the transport drains
`participant.outbox` at its own pace (gRPC: `await context.write()`; WebRTC: a paced track; the
built-in engine: its own task). A slow transport loses its own oldest media, nothing else.
"""

from __future__ import annotations

import time

from parleyd.live.frames import (
    Audio,
    Close,
    CloseCode,
    Event,
    EventType,
    Kind,
    OutFrame,
    ParticipantInfo,
    Role,
)
from parleyd.live.outbox import Outbox
from parleyd.live.resample import Resampler

ALL_KINDS = frozenset({Kind.AUDIO, Kind.TEXT, Kind.VISEMES, Kind.VIDEO, Kind.EVENT})
# Events about this participant's own stream are sent even when it did not subscribe to events.
_ALWAYS_SENT = frozenset(
    {
        EventType.SESSION_PAUSED,
        EventType.SESSION_ENDED,
        EventType.REPLACED,
        EventType.FRAMES_DROPPED,
    }
)


class Participant:
    def __init__(
        self,
        info: ParticipantInfo,
        *,
        sample_rate: int = 16_000,
        chunk_ms: int = 20,
        receive: frozenset[Kind] = ALL_KINDS,
        speaker_id: str = "",
        outbox_capacity: int = 256,
    ) -> None:
        self.info = info
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self.receive = receive
        self.speaker_id = speaker_id
        self.outbox = Outbox(outbox_capacity)
        self.opened = False
        self.closed = False
        self.last_delivery = time.monotonic()
        self._resamplers: dict[tuple[str, int], Resampler] = {}

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def role(self) -> Role:
        return self.info.role

    @property
    def max_chunk_bytes(self) -> int:
        """Largest audio chunk this participant may send: its declared length, at most 1 s."""
        ms = min(self.chunk_ms, 1000)
        return self.sample_rate * ms // 1000 * 2

    def deliver(self, frame: OutFrame) -> None:
        if self.closed:
            return
        if (
            frame.kind != Kind.CONTROL
            and frame.kind not in self.receive
            and not (isinstance(frame, Event) and frame.type in _ALWAYS_SENT)
        ):
            return
        if isinstance(frame, Audio) and frame.sample_rate != self.sample_rate:
            frame = self._resampled(frame)
        self.last_delivery = time.monotonic()
        self.outbox.put(frame)

    def close(self, code: CloseCode, reason: str) -> None:
        """Ends this participant's transport after what is already queued."""
        if not self.closed:
            self.outbox.put(Close(code, reason))
            self.closed = True

    def _resampled(self, frame: Audio) -> Audio:
        key = (frame.sender, frame.sample_rate)
        rs = self._resamplers.get(key)
        if rs is None:
            rs = self._resamplers[key] = Resampler(frame.sample_rate, self.sample_rate)
        return Audio(
            pcm=rs.convert(frame.pcm),
            sample_rate=self.sample_rate,
            sender=frame.sender,
            interaction_id=frame.interaction_id,
            offset_ms=frame.offset_ms,
            source_sequence=frame.source_sequence,
        )
