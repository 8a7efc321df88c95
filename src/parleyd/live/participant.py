"""The one interface between a room and a transport: a participant.

Frames in: the transport calls `room.receive(participant, frame)` with what its client sent.
Frames out: the room calls `participant.deliver(frame)`, which must never block; the transport
sends at its own pace (gRPC: `await context.write()`; WebRTC: paced tracks; the built-in engine:
its own task). `close()` ends the transport after what is already queued.

The gRPC stream (`grpc.interact`), the WebRTC peer (`webrtc.peer`) and the built-in engine
(`engine.agent`) implement it; `BufferedParticipant` (`live.buffered`) is the shared
implementation they build on. The room depends on this interface only.
"""

from __future__ import annotations

from typing import Protocol

from parleyd.live.frames import CloseCode, OutFrame, ParticipantInfo, Role


class Participant(Protocol):
    info: ParticipantInfo
    sample_rate: int  # of the PCM it sends and wants to receive
    chunk_ms: int  # the longest audio chunk it declared it would send
    speaker_id: str
    opened: bool  # set by the room once `opened` was delivered

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> Role: ...

    @property
    def closed(self) -> bool: ...

    def deliver(self, frame: OutFrame) -> None:
        """Queues `frame` for the client; never blocks, never raises for a slow client."""
        ...

    def close(self, code: CloseCode, reason: str) -> None:
        """Ends the transport after what is already queued (idempotent)."""
        ...
