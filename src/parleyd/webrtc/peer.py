"""A browser peer: the WebRTC transport adapter of a room participant.

One RTCPeerConnection is one participant, declared at 48 kHz mono (the hub resamples for the
others). In: the browser's Opus microphone (s16 stereo 48 kHz after decoding) is mixed to mono,
cut into 20 ms chunks and given to the room; the data channel's JSON gives typed text and
interrupts. Out: a drainer task empties the participant's bounded outbox into a paced audio track
(the AI's voice), a video track (the avatar) and the data channel (events and transcripts, JSON).

Liveness: the peer leaves the room when its connection fails or closes, when its data channel
closes (a closed page), or when it has not connected within `connect_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from parleyd.audio import FrameConverter, chunk_bytes
from parleyd.domain.errors import ErrorKind
from parleyd.live import BufferedParticipant, Room
from parleyd.live import inputs as i
from parleyd.live.frames import (
    Audio,
    Close,
    CloseCode,
    ContextChanged,
    Event,
    EventType,
    Kind,
    Opened,
    OutFrame,
    ParticipantInfo,
    Role,
    StreamError,
    Text,
    Transcript,
    TriggerOut,
    Video,
    Visemes,
)
from parleyd.webrtc.tracks import AUDIO_FRAME_MS, AUDIO_RATE, AvatarVideoTrack, PacedAudioTrack

log = logging.getLogger("parleyd.webrtc")

_CHUNK_BYTES = chunk_bytes(AUDIO_RATE, AUDIO_FRAME_MS)
# Bytes the data channel may hold unsent before JSON messages are dropped (a stalled browser).
DATA_CHANNEL_MAX_BUFFERED = 1 << 20
# JSON messages held until the browser's data channel opens.
_PENDING_MAX = 256
_TEXT_IN_MAX = 16_384


def frame_json(frame: OutFrame) -> dict[str, Any] | None:
    """The data channel's JSON for a hub frame (None: it travels as media, not JSON)."""
    if isinstance(frame, Opened):
        return {
            "type": "opened",
            "participant_id": frame.participant.id,
            "role": frame.participant.role.value,
            "others": [{"id": o.id, "role": o.role.value} for o in frame.others],
        }
    if isinstance(frame, Transcript):
        return {"type": "transcript", "text": frame.text, "is_final": frame.is_final}
    if isinstance(frame, Text):
        return {
            "type": "text",
            "role": frame.sender_role.value,
            "text": frame.text,
            "is_final": frame.is_final,
            "interaction_id": frame.interaction_id,
            "offset_ms": frame.offset_ms,
        }
    if isinstance(frame, Event):
        out: dict[str, Any] = {"type": "event", "event": frame.type.value}
        if frame.interaction_id:
            out["interaction_id"] = frame.interaction_id
        if frame.participant is not None:
            out["participant"] = {"id": frame.participant.id, "role": frame.participant.role.value}
        if frame.reason:
            out["reason"] = frame.reason
        if frame.count:
            out["count"] = frame.count
        if frame.time_left_ms is not None:
            out["time_left_ms"] = frame.time_left_ms
        if frame.state is not None:
            out["state"] = frame.state.value
        return out
    if isinstance(frame, Visemes):
        return {
            "type": "visemes",
            "interaction_id": frame.interaction_id,
            "visemes": [[v.id, v.offset_ms, v.weight] for v in frame.visemes],
        }
    if isinstance(frame, TriggerOut):
        return {"type": "trigger", "name": frame.name, "payload": frame.payload}
    if isinstance(frame, ContextChanged):
        return {"type": "context", "dynamic_info": frame.dynamic_info}
    if isinstance(frame, StreamError):
        return {"type": "error", "code": frame.code.value, "message": frame.message}
    if isinstance(frame, Close):
        return {"type": "close", "code": frame.code.value, "reason": frame.reason}
    return None


def parse_input(data: str | bytes) -> i.InFrame | str:
    """A data channel message -> an input frame, or the reason it is refused."""
    if isinstance(data, bytes) or len(data) > _TEXT_IN_MAX:
        return "messages are JSON text of at most 16 KiB"
    try:
        msg = json.loads(data)
    except ValueError:
        return "not JSON"
    if not isinstance(msg, dict):
        return "a message is a JSON object with a `type`"
    kind = msg.get("type")
    if kind == "text":
        text = msg.get("text")
        return i.TextIn(text) if isinstance(text, str) else "`text` must be a string"
    if kind == "interrupt":
        iid = msg.get("interaction_id") or ""
        played = msg.get("played_ms")
        return i.InterruptIn(
            iid if isinstance(iid, str) else "", played if isinstance(played, int) else None
        )
    if kind == "end_of_turn":
        return i.EndOfTurnIn()
    if kind == "leave":
        return i.LeaveIn("left")
    return f"unknown message type {kind!r}: use text, interrupt, end_of_turn or leave"


class WebRtcPeer:
    def __init__(
        self,
        info: ParticipantInfo,
        room: Room,
        configuration: RTCConfiguration,
        *,
        video: bool,
        outbox_capacity: int = 256,
        connect_timeout_s: float = 20.0,
        on_gone: Callable[[WebRtcPeer], None] | None = None,
    ) -> None:
        receive = {Kind.AUDIO, Kind.TEXT, Kind.VISEMES, Kind.EVENT}
        if video:
            receive.add(Kind.VIDEO)
        self.participant = BufferedParticipant(
            info,
            sample_rate=AUDIO_RATE,
            chunk_ms=AUDIO_FRAME_MS,
            receive=frozenset(receive),
            outbox_capacity=outbox_capacity,
        )
        self.room = room
        self.pc = RTCPeerConnection(configuration)
        self.audio_out = PacedAudioTrack()
        self.video_out = AvatarVideoTrack() if video else None
        self.connect_timeout_s = connect_timeout_s
        self._on_gone = on_gone
        self._channel: Any = None
        self._pending: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.connected = asyncio.Event()
        self.gone = asyncio.Event()
        self.pc.on("connectionstatechange", self._on_state)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)

    @property
    def id(self) -> str:
        return self.participant.id

    @property
    def role(self) -> Role:
        return self.participant.role

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Applies the browser's offer and returns the answer (all candidates gathered)."""
        await self.pc.setRemoteDescription(offer)
        for t in self.pc.getTransceivers():
            if t.kind == "audio" and t.sender.track is None:
                self.pc.addTrack(self.audio_out)
            elif t.kind == "video" and self.video_out is not None and t.sender.track is None:
                self.pc.addTrack(self.video_out)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        local = self.pc.localDescription
        return RTCSessionDescription(sdp=local.sdp, type=local.type)

    def start(self) -> None:
        """After the room admitted the participant: drain its outbox, watch the connection."""
        self._spawn(self._drain())
        self._spawn(self._watch_connect())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- liveness -------------------------------------------------------------------------------

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.debug("peer %s connection %s", self.id, state)
        if state == "connected":
            self.connected.set()
        elif state in ("failed", "closed"):
            self._spawn(self.stop(f"connection {state}"))

    async def _watch_connect(self) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), self.connect_timeout_s)
        except TimeoutError:
            await self.stop(f"did not connect within {self.connect_timeout_s:g}s")

    async def stop(self, reason: str) -> None:
        """Leaves the room (pausing the session when it was the last USER) and hangs up."""
        if self._closing:
            return
        self._closing = True
        log.info("webrtc peer leaving", extra={"participant": self.id, "reason": reason})
        try:
            await asyncio.shield(self.room.leave(self.participant, reason))
        finally:
            self.participant.close(CloseCode.OK, reason)
            current = asyncio.current_task()
            for task in list(self._tasks):
                if task is not current:
                    task.cancel()
            with contextlib.suppress(Exception):
                await self.pc.close()
            self.gone.set()
            if self._on_gone is not None:
                self._on_gone(self)

    # -- in -------------------------------------------------------------------------------------

    def _on_datachannel(self, channel: Any) -> None:
        self._channel = channel
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._spawn(self.stop("data channel closed")))
        if channel.readyState == "open":
            self._flush_pending()
        else:
            channel.on("open", self._flush_pending)

    def _on_message(self, data: str | bytes) -> None:
        frame = parse_input(data)
        if isinstance(frame, str):
            self._send_json(
                {"type": "error", "code": ErrorKind.INVALID_ARGUMENT.value, "message": frame}
            )
            return
        if isinstance(frame, i.LeaveIn):
            self._spawn(self.stop("left"))
            return
        self._spawn(self.room.receive(self.participant, frame))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.role == Role.USER:
            self._spawn(self._read_mic(track))

    async def _read_mic(self, track: MediaStreamTrack) -> None:
        """Browser Opus (decoded by aiortc) -> 20 ms PCM16 mono 48 kHz chunks into the room."""
        converter = FrameConverter(AUDIO_RATE)
        pending = bytearray()
        sequence = 0
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            pending += converter.convert(frame)
            while len(pending) >= _CHUNK_BYTES:
                chunk = bytes(pending[:_CHUNK_BYTES])
                del pending[:_CHUNK_BYTES]
                sequence += 1
                if self.participant.opened:
                    await self.room.receive(self.participant, i.AudioIn(chunk, sequence))

    # -- out ------------------------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            frame = await self.participant.outbox.get()
            if isinstance(frame, Audio):
                self.audio_out.push(frame.pcm)
                continue
            if isinstance(frame, Video):
                if self.video_out is not None:
                    self.video_out.push(frame.image)
                continue
            if isinstance(frame, Event) and frame.type == EventType.INTERRUPTED:
                self.audio_out.flush()
            message = frame_json(frame)
            if message is not None:
                self._send_json(message)
            if isinstance(frame, Close):
                # Let the browser read why, then hang up.
                await asyncio.sleep(0.2)
                self._spawn(self.stop(frame.reason))
                return

    def _send_json(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, separators=(",", ":"))
        channel = self._channel
        if channel is None or channel.readyState != "open":
            if len(self._pending) < _PENDING_MAX:  # past that, the message is dropped
                self._pending.append(text)
            return
        if channel.bufferedAmount > DATA_CHANNEL_MAX_BUFFERED:  # the browser is not reading
            return
        channel.send(text)

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        for text in pending:
            with contextlib.suppress(Exception):
                self._channel.send(text)
