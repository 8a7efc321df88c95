"""Routing: one handler per kind of frame a participant sends, chosen by its role.

USER frames go to the AGENT and OBSERVERs; AGENT frames (its replies) go to USERs and OBSERVERs;
an OBSERVER only listens. A frame a role may not send, or one that fails its check, is answered
with a StreamError to its sender alone and changes nothing. A new USER message (typed text, or a
final transcript) first cuts the AI reply in flight, as a barge-in.

Text is stored before anyone sees it. When the history cannot be written (the database is out of
reach, or its disk is full), a USER's text is not relayed and its sender is told: a StreamError
(UNAVAILABLE, or RESOURCE_EXHAUSTED for a full disk) on `text.text`, "not delivered: ...; send it
again". A final transcript that cannot be stored is not shown; the AGENT that sent it gets the
same kind of StreamError on `transcript.text`, and one WARNING line is logged (the user's words
are missing from the history). Audio never touches the database and flows on untouched.
Replies: see live/replies.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from parleyd.domain import limits
from parleyd.domain.errors import ParleyError
from parleyd.domain.session import MessageRole
from parleyd.live import checks
from parleyd.live import inputs as i
from parleyd.live.frames import (
    Audio,
    ContextChanged,
    Event,
    EventType,
    Role,
    StreamError,
    Text,
    Transcript,
    TriggerOut,
    Video,
    Visemes,
)
from parleyd.live.members import TO_AI, TO_PEOPLE, Members
from parleyd.live.participant import Participant
from parleyd.live.record import SessionRecord
from parleyd.live.replies import HISTORY_DOWN, NOT_STORED, Replies, Reply

log = logging.getLogger("parleyd.live")

Handler = Callable[[Participant, Any], Awaitable[None]]

NOT_DELIVERED = f"not delivered: {HISTORY_DOWN}; send it again"
TRANSCRIPT_NOT_SHOWN = f"final transcript not shown: {HISTORY_DOWN}"


class Router:
    def __init__(self, members: Members, replies: Replies, record: SessionRecord) -> None:
        self._members = members
        self._replies = replies
        self._record = record
        self._handlers: dict[Role, dict[type, Handler]] = {
            Role.USER: {
                i.AudioIn: self._user_audio,
                i.TextIn: self._user_text,
                i.TriggerIn: self._user_trigger,
                i.ContextIn: self._context,
                i.PlaybackMarkIn: self._playback_mark,
                i.InterruptIn: self._interrupt,
                i.EndOfTurnIn: self._end_of_turn,
            },
            Role.AGENT: {
                i.ReplyStartIn: self._reply_start,
                i.ReplyAudioIn: self._reply_audio,
                i.AudioIn: self._agent_audio,
                i.ReplyTextIn: self._reply_text,
                i.TextIn: self._agent_text,
                i.ReplyVisemesIn: self._reply_visemes,
                i.ReplyEndIn: self._reply_end,
                i.ReplyVideoIn: self._reply_video,
                i.ReplyCancelIn: self._reply_cancel,
                i.TranscriptIn: self._transcript,
                i.SpeechIn: self._speech,
                i.NoticeIn: self._notice,
                i.ContextIn: self._context,
            },
            Role.OBSERVER: {},
        }

    async def route(self, p: Participant, frame: i.InFrame) -> None:
        handler = self._handlers[p.role].get(type(frame))
        if handler is None:
            p.deliver(checks.refused(_not_for(p.role, type(frame).__name__)))
            return
        await handler(p, frame)

    # -- from a USER --------------------------------------------------------------------------

    async def _user_audio(self, p: Participant, frame: i.AudioIn) -> None:
        if error := checks.pcm(p, frame.pcm, "audio.pcm"):
            p.deliver(error)
        elif frame.pcm:
            out = Audio(frame.pcm, p.sample_rate, p.id, source_sequence=frame.sequence)
            self._members.send_to(out, TO_AI, exclude=p.id)

    async def _user_text(self, p: Participant, frame: i.TextIn) -> None:
        if error := checks.text(frame.text, "text.text"):
            p.deliver(error)
            return
        if await self._user_turn(p, frame.text, "text.text", NOT_DELIVERED):
            self._members.send_to(Text(frame.text, p.id, Role.USER), TO_AI, exclude=p.id)

    async def _user_turn(self, p: Participant, text: str, field: str, not_stored: str) -> bool:
        """Stores a new message of the USER (typed text or a final transcript). A reply still in
        flight is cut first, exactly as by an `interrupt` without played_ms (at the last
        playback_mark, INTERRUPTED broadcast): the user has moved on, and the history keeps what
        was heard of the reply before the message that cut it.

        False when the history cannot be written: then `p` (who sent it) got a StreamError on
        `field` saying `not_stored`, and the message must go no further."""
        await self._replies.interrupt("", None)
        try:
            await self._record.append(MessageRole.USER, text)
        except NOT_STORED as exc:
            p.deliver(StreamError(exc.kind, not_stored, field))
            return False
        return True

    async def _user_trigger(self, p: Participant, frame: i.TriggerIn) -> None:
        if error := checks.trigger(frame.name, frame.encoded_size):
            p.deliver(error)
        else:
            self._members.send_to(TriggerOut(frame.name, frame.payload, p.id), TO_AI, exclude=p.id)

    async def _playback_mark(self, p: Participant, frame: i.PlaybackMarkIn) -> None:
        self._replies.mark_played(frame.interaction_id, frame.played_ms)

    async def _interrupt(self, p: Participant, frame: i.InterruptIn) -> None:
        await self._replies.interrupt(frame.interaction_id, frame.played_ms)

    async def _end_of_turn(self, p: Participant, frame: i.EndOfTurnIn) -> None:
        stopped = Event(EventType.SPEECH_STOPPED, participant=p.info, reason="end_of_turn")
        self._members.send_to(stopped, TO_AI)

    async def _context(self, p: Participant, frame: i.ContextIn) -> None:
        try:
            await self._record.update_context(frame.dynamic_info, frame.scene)
        except ParleyError as exc:  # an over-long text, or the session ended meanwhile
            p.deliver(StreamError(exc.kind, exc.message, "context_update"))
            return
        self._members.send_to(ContextChanged(frame.dynamic_info, frame.scene), TO_AI)

    # -- from the AGENT -----------------------------------------------------------------------

    async def _reply_start(self, p: Participant, frame: i.ReplyStartIn) -> None:
        if error := checks.interaction_id(frame.interaction_id, "reply_start"):
            p.deliver(error)
        else:
            await self._replies.start(frame.interaction_id)

    async def _reply_audio(self, p: Participant, frame: i.ReplyAudioIn) -> None:
        rate = frame.sample_rate or p.sample_rate
        if error := checks.pcm(p, frame.pcm, "reply_audio.pcm", rate):
            p.deliver(error)
        elif frame.pcm:
            reply = await self._replies.for_media(frame.interaction_id)
            self._play(p, reply, frame.pcm, rate)

    async def _agent_audio(self, p: Participant, frame: i.AudioIn) -> None:
        """AGENT audio outside a reply lifecycle: a complete reply of its own."""
        if self._replies.in_flight is not None:
            await self._reply_audio(p, i.ReplyAudioIn(frame.pcm))
            return
        if error := checks.pcm(p, frame.pcm, "reply_audio.pcm"):
            p.deliver(error)
        elif frame.pcm:
            reply = await self._replies.start()
            self._play(p, reply, frame.pcm, p.sample_rate)
            await self._replies.end(reply)

    def _play(self, p: Participant, reply: Reply, pcm: bytes, rate: int) -> None:
        if not reply.interrupted:
            out = Audio(pcm, rate, p.id, reply.interaction_id, int(reply.audio_ms))
            reply.audio_ms += len(pcm) / 2 / rate * 1000
            self._members.send_to(out, TO_PEOPLE)

    async def _reply_text(self, p: Participant, frame: i.ReplyTextIn) -> None:
        if error := checks.text(frame.text, "reply_text.text"):
            p.deliver(error)
            return
        reply = await self._replies.for_media(frame.interaction_id)
        at = int(reply.audio_ms) if frame.offset_ms is None else max(0, frame.offset_ms)
        if not reply.interrupted:
            reply.parts.append((at, frame.text))
            piece = Text(frame.text, p.id, Role.AGENT, False, reply.interaction_id, at)
            self._members.send_to(piece, TO_PEOPLE)

    async def _agent_text(self, p: Participant, frame: i.TextIn) -> None:
        """AGENT text outside a reply lifecycle: a complete reply, shown once as final text."""
        if self._replies.in_flight is not None:
            await self._reply_text(p, i.ReplyTextIn(frame.text))
            return
        if error := checks.text(frame.text, "reply_text.text"):
            p.deliver(error)
            return
        reply = await self._replies.start()
        reply.parts.append((int(reply.audio_ms), frame.text))
        await self._replies.end(reply)

    async def _reply_visemes(self, p: Participant, frame: i.ReplyVisemesIn) -> None:
        reply = await self._replies.for_media(frame.interaction_id)
        if not reply.interrupted:
            self._members.send_to(Visemes(reply.interaction_id, frame.visemes), TO_PEOPLE)

    async def _reply_end(self, p: Participant, frame: i.ReplyEndIn) -> None:
        reply = self._replies.find(frame.interaction_id)
        if reply is None or reply.ended:
            p.deliver(checks.refused("no reply in flight to end", "reply_end"))
        else:
            await self._replies.end(reply)

    async def _reply_video(self, p: Participant, frame: i.ReplyVideoIn) -> None:
        # Idle frames (no interaction_id) always go out; frames of a cut reply never do.
        reply = self._replies.find(frame.interaction_id) if frame.interaction_id else None
        if reply is None or not reply.interrupted:
            video = Video(
                frame.image,
                frame.mime_type,
                frame.width,
                frame.height,
                frame.interaction_id,
                frame.offset_ms,
            )
            self._members.send_to(video, TO_PEOPLE)

    async def _reply_cancel(self, p: Participant, frame: i.ReplyCancelIn) -> None:
        await self._replies.cancel(frame.interaction_id, frame.played_ms)

    async def _transcript(self, p: Participant, frame: i.TranscriptIn) -> None:
        """The agent recognised the user's speech: final text enters the history, then is shown."""
        if not frame.text.strip() or len(frame.text) > limits.TEXT_MAX_CHARS:
            return
        users = self._members.users
        user = users[0] if users else None
        if frame.is_final and not await self._user_turn(
            p, frame.text, "transcript.text", TRANSCRIPT_NOT_SHOWN
        ):
            log.warning(
                "final transcript of %s not stored: %s", self._record.session_id, HISTORY_DOWN
            )
            return
        shown = Transcript(
            frame.text, user.id if user else "", user.speaker_id if user else "", frame.is_final
        )
        self._members.send_to(shown, TO_PEOPLE)

    async def _speech(self, p: Participant, frame: i.SpeechIn) -> None:
        users = self._members.users
        kind = EventType.SPEECH_STARTED if frame.started else EventType.SPEECH_STOPPED
        self._members.send_to(Event(kind, participant=users[0].info if users else None), TO_PEOPLE)

    async def _notice(self, p: Participant, frame: i.NoticeIn) -> None:
        """The AGENT tells the people something about a reply (it comes as text only): an Event
        with the reply's interaction_id, unless that reply was already cut."""
        if frame.kind not in _NOTICES:
            p.deliver(checks.refused(f"{frame.kind.value} is not a notice", "notice.kind"))
            return
        reply = self._replies.find(frame.interaction_id)
        if reply is not None and reply.interrupted:
            return
        iid = reply.interaction_id if reply is not None else frame.interaction_id
        notice = Event(frame.kind, interaction_id=iid, reason=frame.reason[: limits.TEXT_MAX_CHARS])
        self._members.send_to(notice, TO_PEOPLE)


# The events an AGENT may raise itself with a NoticeIn.
_NOTICES = frozenset({EventType.VOICE_UNAVAILABLE})


def _not_for(role: Role, frame_name: str) -> str:
    if role == Role.OBSERVER:
        return "an OBSERVER can only send `leave`"
    if role == Role.USER:
        return f"{frame_name} is for the AGENT only"
    return f"{frame_name} is for a USER only"
