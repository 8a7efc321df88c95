"""The Interact stream: the gRPC transport adapter of a room participant.

One stream is one participant. This task reads requests and hands them to the room; a writer task
drains the participant's outbox into `context.write()`, whose await is the flow control toward a
slow client (the outbox, not gRPC, absorbs the difference, and drops old media when full).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import grpc
from parley.v1 import interact_pb2 as pb

from parleyd.domain import limits
from parleyd.domain.errors import (
    ErrorKind,
    FieldViolation,
    InvalidArgument,
    ParleyError,
    Unauthenticated,
)
from parleyd.domain.ids import is_session_id, new_participant_id
from parleyd.grpc import convert
from parleyd.grpc.interact_convert import ROLE_FROM_PB, in_frame, out_message, subscription
from parleyd.grpc.status import to_status
from parleyd.live import BufferedParticipant, Hub, Room
from parleyd.live.frames import Close, CloseCode, Opened, ParticipantInfo, StreamError

log = logging.getLogger("parleyd.interact")

JOIN_TIMEOUT_S = 10.0
# After a client half-closes, it keeps receiving until nothing has come for this long (a reply
# to its last message is still on its way), and at most for the longer bound.
HALF_CLOSE_QUIET_S = 1.5
HALF_CLOSE_LINGER_MAX_S = 30.0

_CLOSE_STATUS = {
    CloseCode.ABORTED: grpc.StatusCode.ABORTED,
    CloseCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


class InteractHandler:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def __call__(self, request_iterator: Any, context: Any) -> None:
        try:
            participant, room, takeover = await self._admit(context)
            await room.join(participant, takeover=takeover)
        except ParleyError as exc:
            await context.abort_with_status(to_status(exc))
            return
        reader = asyncio.create_task(self._read(context, room, participant))
        close: Close | None = None
        try:
            close = await self._write(context, room, participant)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await asyncio.shield(room.leave(participant, "stream closed"))
        if close is not None and close.code in _CLOSE_STATUS:
            await context.abort(_CLOSE_STATUS[close.code], close.reason)

    async def _admit(self, context: Any) -> tuple[BufferedParticipant, Room, bool]:
        """Reads and checks `join`; the fatal mistakes raise the error that ends the stream."""
        try:
            first = await asyncio.wait_for(context.read(), JOIN_TIMEOUT_S)
        except TimeoutError:
            raise InvalidArgument.field(
                "join", f"the first message must be `join`, within {JOIN_TIMEOUT_S:g}s"
            ) from None
        if first is grpc.aio.EOF or first.WhichOneof("payload") != "join":
            raise InvalidArgument.field("join", "the first message must be `join`")
        join: pb.Join = first.join
        violations: list[FieldViolation] = []
        if not join.session_id:
            violations.append(FieldViolation("join.session_id", "is required"))
        elif not is_session_id(join.session_id):
            violations.append(
                FieldViolation("join.session_id", "must be 'sess_' followed by a 26-character ULID")
            )
        role = ROLE_FROM_PB.get(join.role)
        if role is None:
            violations.append(
                FieldViolation("join.role", "must be ROLE_USER, ROLE_AGENT or ROLE_OBSERVER")
            )
        rate = join.audio_format.sample_rate or limits.AUDIO_RATE_DEFAULT_HZ
        low, high = limits.AUDIO_RATE_MIN_HZ, limits.AUDIO_RATE_MAX_HZ
        if not low <= rate <= high:
            violations.append(
                FieldViolation(
                    "join.audio_format.sample_rate",
                    f"{rate} Hz is not supported: use {low} to {high} (e.g. 16000, 48000)",
                )
            )
        chunk_ms = join.audio_format.chunk_ms or limits.AUDIO_CHUNK_DEFAULT_MS
        if not limits.AUDIO_CHUNK_MIN_MS <= chunk_ms <= limits.AUDIO_CHUNK_MAX_MS:
            violations.append(
                FieldViolation(
                    "join.audio_format.chunk_ms",
                    f"must be between {limits.AUDIO_CHUNK_MIN_MS} and "
                    f"{limits.AUDIO_CHUNK_MAX_MS} ms",
                )
            )
        if len(join.speaker_id) > limits.ID_FIELD_MAX_CHARS:
            violations.append(
                FieldViolation(
                    "join.speaker_id", f"the limit is {limits.ID_FIELD_MAX_CHARS} characters"
                )
            )
        if violations:
            raise InvalidArgument(violations)
        if not join.access_token:
            raise Unauthenticated("missing access token: set join.access_token")
        session = await self._hub.sessions.admit(join.session_id, join.access_token)
        assert role is not None
        info = ParticipantInfo(
            new_participant_id(),
            role,
            join.client.name[: limits.CLIENT_NAME_MAX_CHARS],
            join.client.version[: limits.CLIENT_VERSION_MAX_CHARS],
            join.client.engine[: limits.CLIENT_VERSION_MAX_CHARS],
        )
        participant = BufferedParticipant(
            info,
            sample_rate=rate,
            chunk_ms=chunk_ms,
            receive=subscription(join),
            speaker_id=join.speaker_id,
            outbox_capacity=self._hub.settings.outbox_capacity,
        )
        return participant, self._hub.room_for(session), join.takeover

    async def _read(self, context: Any, room: Room, p: BufferedParticipant) -> None:
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                # The client finished sending (grpcurl -d @ does so at the end of its input):
                # it still gets the answer to what it sent, then it leaves.
                await self._linger(room, p)
                await room.leave(p, "client closed its side of the stream")
                p.close(CloseCode.OK, "left")
                return
            frame = in_frame(request)
            if isinstance(frame, str):
                p.deliver(StreamError(ErrorKind.INVALID_ARGUMENT, frame))
                continue
            await room.receive(p, frame)

    async def _linger(self, room: Room, p: BufferedParticipant) -> None:
        """Waits until the room has been quiet toward `p` for a moment (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HALF_CLOSE_LINGER_MAX_S
        while loop.time() < deadline and not p.closed:
            busy = room.replies.in_flight is not None
            quiet_for = time.monotonic() - p.last_delivery
            if not busy and quiet_for >= HALF_CLOSE_QUIET_S:
                return
            await asyncio.sleep(0.05)

    async def _write(self, context: Any, room: Room, p: BufferedParticipant) -> Close:
        sequence = 0
        while True:
            frame = await p.outbox.get()
            if isinstance(frame, Close):
                return frame
            session_pb = None
            if isinstance(frame, Opened):
                session_pb = convert.session_to_pb(room.session, room.record.now_ms())
            message = out_message(frame, session_pb)
            sequence += 1
            message.sequence = sequence
            ns = time.time_ns()
            message.server_time.seconds, message.server_time.nanos = divmod(ns, 1_000_000_000)
            await context.write(message)
