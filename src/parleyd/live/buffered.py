"""The shared participant implementation: subscriptions, per-sender resampling, a bounded outbox.

A transport adapter builds on `BufferedParticipant` and drains `outbox` at its own pace; the room
never waits for it. A slow transport loses its own oldest media, nothing else (see `outbox`).
"""

from __future__ import annotations

import time

from parleyd.audio import Resampler
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


class BufferedParticipant:
    """Implements `live.Participant` with an `Outbox` its transport drains."""

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
        self._closed = False
        # When the room last gave this participant something (a half-closed client lingers on it).
        self.last_delivery = time.monotonic()
        self._resamplers: dict[tuple[str, int], Resampler] = {}

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def role(self) -> Role:
        return self.info.role

    @property
    def closed(self) -> bool:
        return self._closed

    def deliver(self, frame: OutFrame) -> None:
        if self._closed:
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
        if not self._closed:
            self.outbox.put(Close(code, reason))
            self._closed = True

    def _resampled(self, frame: Audio) -> Audio:
        # One resampler per (sender, rate) keeps filter state across chunks: no clicks at edges.
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
