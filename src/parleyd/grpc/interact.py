"""The Interact stream: the gRPC transport adapter of a room participant.

One stream is one participant. A reader task reads requests and hands them to the room; a writer
task drains the participant's outbox into `context.write()`, whose await is the flow control
toward a slow client (the outbox, not gRPC, absorbs the difference, and drops old media when
full).

How a stream ends. The call ends when the writer delivers the participant's `Close` (OK, or
ABORTED / UNAVAILABLE / UNAUTHENTICATED from its code), and also whenever the reader task ends
for a reason of its own: it never just dies while the writer waits. The participant then leaves
its room exactly as on any other disconnect (PARTICIPANT_LEFT to the others; the session pauses
after the pause grace when it was the last USER, so metering stops), and the call ends with:

- INVALID_ARGUMENT, when a frame's bytes are not an `InteractRequest` (truncated, garbage,
  invalid UTF-8 in a string): the decoding seam (`grpc/_decode.py`) makes `context.read()` raise
  `UndecodableRequest` and logs one rate-limited WARNING line, never a traceback;
- RESOURCE_EXHAUSTED, on persistent abuse of the frame rate (below);
- INTERNAL "internal error; see the server log" for anything else, logged once at ERROR.

Receive limits (`domain/limits.py`):

- One message of any RPC: at most MESSAGE_MAX_BYTES (4 MiB), enforced by gRPC itself
  (`grpc.max_receive_message_length` in `grpc/server.py`): the call ends with RESOURCE_EXHAUSTED
  "Received message larger than max (<n> vs. 4194304)".
- Frame rate of a USER or OBSERVER stream: a token bucket of INTERACT_FRAMES_BURST (250) frames,
  refilled at INTERACT_FRAMES_PER_SECOND_MAX (250) per second, so at most 250 + 250 * t frames in
  any t seconds. A frame over the budget is dropped (nothing of it is applied) and reported with
  a recoverable StreamError, code RESOURCE_EXHAUSTED, that names the limit: at most one such error
  per second, each counting the frames dropped since the previous one (a flood must not turn
  into a flood of errors, which would bypass the outbox bound). AGENT streams are not held to
  this budget: an external AGENT streams reply audio as fast as its synthesizer makes it, and
  dropping frames of a reply would garble it.
- Persistent abuse, any role: a stream that sends more than 10 times the rate
  (ABUSE_FACTOR x INTERACT_FRAMES_PER_SECOND_MAX = 2,500 frames per second) for long enough to
  exceed it by 2 seconds' worth (5,000 frames) is ended with RESOURCE_EXHAUSTED. At 20 times the
  rate that is after 2 s; a short burst (even of several thousand frames) never is.
- Text: at most TEXT_MAX_CHARS (4,096) characters per text, reply text or transcript
  (`live/checks.py`; one more is a StreamError INVALID_ARGUMENT on field `text.text`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

import grpc
from parley.v1 import interact_pb2 as pb

from parleyd.domain import limits
from parleyd.domain.errors import (
    ErrorKind,
    FieldViolation,
    InvalidArgument,
    ParleyError,
    ResourceExhausted,
    Unauthenticated,
)
from parleyd.domain.ids import is_session_id, new_participant_id
from parleyd.grpc import convert
from parleyd.grpc._decode import RateLimitedLog
from parleyd.grpc.interact_convert import ROLE_FROM_PB, in_frame, out_message, subscription
from parleyd.grpc.status import to_status
from parleyd.live import BufferedParticipant, Hub, Room
from parleyd.live.frames import Close, CloseCode, Opened, ParticipantInfo, Role, StreamError

log = logging.getLogger("parleyd.interact")

JOIN_TIMEOUT_S = 10.0
# After a client half-closes, it keeps receiving until nothing has come for this long (a reply
# to its last message is still on its way), and at most for the longer bound.
HALF_CLOSE_QUIET_S = 1.5
HALF_CLOSE_LINGER_MAX_S = 30.0
# After its reader failed, how long a stream's writer may take to finish the write in flight.
WRITER_FINISH_S = 2.0

# The frame budget (see the module docstring): which roles it holds, how often a stream is told
# about dropped frames, and when flooding ends the stream.
BUDGETED_ROLES = frozenset({Role.USER, Role.OBSERVER})
DROP_REPORT_INTERVAL_S = 1.0
ABUSE_FACTOR = 10
ABUSE_SLACK_S = 2.0
INTERNAL_MESSAGE = "internal error; see the server log"

_CLOSE_STATUS = {
    CloseCode.ABORTED: grpc.StatusCode.ABORTED,
    CloseCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    CloseCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
}


class InteractHandler:
    def __init__(self, hub: Hub, *, frames_per_second: int = 0) -> None:
        """`frames_per_second`: each USER/OBSERVER stream's budget; 0: the documented default."""
        self._hub = hub
        self._frames_per_second = frames_per_second
        self._warn = RateLimitedLog(log)

    async def __call__(self, request_iterator: Any, context: Any) -> None:
        try:
            participant, room, takeover = await self._admit(context)
        except ParleyError as exc:
            await context.abort_with_status(to_status(exc))
            return
        # The join runs to its end even when the client goes away meanwhile: cut short, its
        # database write could land after the room decided (ACTIVE with nobody in the room).
        joining = asyncio.ensure_future(room.join(participant, takeover=takeover))
        try:
            await asyncio.shield(joining)
        except ParleyError as exc:
            await context.abort_with_status(to_status(exc))
            return
        except BaseException:
            await asyncio.shield(_undo_join(joining, room, participant))
            raise
        reader = asyncio.create_task(self._read(context, room, participant))
        writer = asyncio.create_task(self._write(context, room, participant))
        try:
            await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
            if not writer.done() and _failure(reader) is None:
                # The client half-closed or said `leave`: the participant is closed, and the
                # writer delivers what is queued, then its Close.
                participant.close(CloseCode.OK, "left")
                await asyncio.wait((writer,))
            elif not writer.done():
                # The reader failed: the writer ends after its write in flight (cancelling it
                # mid-write would leave the call unable to send its status), at most this long.
                participant.close(CloseCode.ABORTED, "stream ended by an error")
                await asyncio.wait((writer,), timeout=WRITER_FINISH_S)
        finally:
            for task in (reader, writer):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(reader, writer, return_exceptions=True)
            failure = _failure(reader) or _failure(writer)
            reason = "stream closed" if failure is None else "stream ended by an error"
            await asyncio.shield(room.leave(participant, reason))
        if failure is not None:
            await self._fail(context, failure)
            return
        close = writer.result() if not writer.cancelled() else None
        if close is not None and close.code in _CLOSE_STATUS:
            await context.abort(_CLOSE_STATUS[close.code], close.reason)

    async def _fail(self, context: Any, failure: BaseException) -> None:
        """Ends the call after its reader or writer failed: a caller's mistake with its status,
        anything else logged once at ERROR and answered INTERNAL."""
        if context.done():
            # The call ended first (the client went away), which is what failed the task.
            log.debug("interact stream ended after its call: %r", failure)
            return
        if isinstance(failure, ParleyError):
            await _abort(context.abort_with_status(to_status(failure)))
            return
        log.error(
            "interact stream failed: %s",
            failure,
            exc_info=(type(failure), failure, failure.__traceback__),
            extra={"peer": context.peer()},
        )
        await _abort(context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE))

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
        budget = FrameBudget(
            time.monotonic(), limited=p.role in BUDGETED_ROLES, rate=self._frames_per_second
        )
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                # The client finished sending (grpcurl -d @ does so at the end of its input):
                # it still gets the answer to what it sent, then it leaves.
                await self._linger(room, p)
                await room.leave(p, "client closed its side of the stream")
                p.close(CloseCode.OK, "left")
                return
            now = time.monotonic()
            try:
                admitted = budget.take(now)
            except ResourceExhausted as exc:
                self._warn.warning(
                    "frames", "interact stream ended: %s", exc.message, peer=context.peer()
                )
                raise
            if not admitted:
                if (report := budget.report(now)) is not None:
                    p.deliver(report)
                continue
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
            # A reply is worth waiting for only while an AGENT other than `p` can finish it.
            agent = room.members.agent
            busy = room.replies.in_flight is not None and agent is not None and agent is not p
            quiet_for = time.monotonic() - p.last_delivery
            if not busy and quiet_for >= HALF_CLOSE_QUIET_S:
                return
            await asyncio.sleep(0.05)

    async def _write(self, context: Any, room: Room, p: BufferedParticipant) -> Close | None:
        """Writes `p`'s frames until its Close (returned), or until the call refuses a write
        (None: the client is gone, there is nobody to tell anything)."""
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
            try:
                await context.write(message)
            except Exception as exc:  # the call is ending (the client went away): not a bug
                log.debug("interact write refused, the call is ending: %r", exc)
                return None


async def _undo_join(joining: asyncio.Future[None], room: Room, p: BufferedParticipant) -> None:
    """The stream ended while `p` was joining: once the join is done, `p` leaves again (the
    session pauses as after any disconnect); a refused join left nothing to undo."""
    with contextlib.suppress(BaseException):
        await joining
    await room.leave(p, "stream ended while joining")


async def _abort(ending: Awaitable[Any]) -> None:
    """Ends the call with a status; a call that can no longer take one (its client went away
    while a write was in flight) just ends."""
    try:
        await ending
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        log.debug("the call could not take its status: %r", exc)


def _failure(task: asyncio.Task[Any]) -> BaseException | None:
    """The exception `task` ended with (None while it runs, when it returned, or was cancelled)."""
    if not task.done() or task.cancelled():
        return None
    return task.exception()


class FrameBudget:
    """The frame-rate limits of one Interact stream (see the module docstring)."""

    __slots__ = (
        "_at",
        "_burst",
        "_flood",
        "_flood_rate",
        "_flood_slack",
        "_limited",
        "_rate",
        "_reported_at",
        "_tokens",
        "dropped",
    )

    RATE = limits.INTERACT_FRAMES_PER_SECOND_MAX
    BURST = limits.INTERACT_FRAMES_BURST
    FLOOD_RATE = ABUSE_FACTOR * limits.INTERACT_FRAMES_PER_SECOND_MAX
    FLOOD_SLACK = FLOOD_RATE * ABUSE_SLACK_S

    def __init__(self, now: float, *, limited: bool = True, rate: int = 0) -> None:
        """`rate`: frames per second (and burst) instead of the documented default, for an
        operator who raised `--interact-max-frames-per-second`; the flood limit scales with it."""
        self._limited = limited
        scale = rate / self.RATE if rate else 1.0  # every limit scales with the rate
        self._rate = round(self.RATE * scale)
        self._burst = round(self.BURST * scale)
        self._flood_rate = round(self.FLOOD_RATE * scale)
        self._flood_slack = self.FLOOD_SLACK * scale
        self._at = now
        self._tokens = float(self._burst)
        self._flood = self._flood_slack
        self._reported_at = -DROP_REPORT_INTERVAL_S
        self.dropped = 0  # since the last report

    def take(self, now: float) -> bool:
        """Whether a frame received at `now` may go on (False: drop it).

        Raises ResourceExhausted when the stream floods: more than FLOOD_RATE frames per second,
        by FLOOD_SLACK frames in all.
        """
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._flood = min(self._flood_slack, self._flood + elapsed * self._flood_rate) - 1
        if self._flood < 0:
            raise ResourceExhausted(
                f"more than {self._flood_rate} frames per second for {ABUSE_SLACK_S:g}s "
                f"(the limit is {self._rate} frames per second, burst {self._burst}): stream closed"
            )
        if not self._limited:
            return True
        self._tokens = min(float(self._burst), self._tokens + elapsed * self._rate)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.dropped += 1
        return False

    def report(self, now: float) -> StreamError | None:
        """The error telling the stream about its dropped frames, at most one per interval."""
        if now - self._reported_at < DROP_REPORT_INTERVAL_S:
            return None
        self._reported_at = now
        count, self.dropped = self.dropped, 0
        frames = "frame" if count == 1 else "frames"
        return StreamError(
            ErrorKind.RESOURCE_EXHAUSTED,
            f"frame rate limit: at most {self._rate} frames per second (burst {self._burst}) on "
            f"one stream; {count} {frames} dropped since the last such error",
        )
