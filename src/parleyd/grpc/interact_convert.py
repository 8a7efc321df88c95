"""Translation between Interact protobuf messages and the hub's frames."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.json_format import MessageToDict
from parley.v1 import interact_pb2 as pb
from parley.v1.session_pb2 import Session as SessionPb

from parleyd.domain.session import SceneItem
from parleyd.grpc import convert
from parleyd.grpc.status import code_number
from parleyd.live import inputs as i
from parleyd.live.frames import (
    Audio,
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
    VisemeMark,
    Visemes,
)

ROLE_FROM_PB = {pb.ROLE_USER: Role.USER, pb.ROLE_AGENT: Role.AGENT, pb.ROLE_OBSERVER: Role.OBSERVER}
ROLE_TO_PB = {v: k for k, v in ROLE_FROM_PB.items()}
_EVENT_TO_PB = {
    EventType.SPEECH_STARTED: pb.EVENT_TYPE_SPEECH_STARTED,
    EventType.SPEECH_STOPPED: pb.EVENT_TYPE_SPEECH_STOPPED,
    EventType.RESPONSE_STARTED: pb.EVENT_TYPE_RESPONSE_STARTED,
    EventType.RESPONSE_DONE: pb.EVENT_TYPE_RESPONSE_DONE,
    EventType.INTERRUPTED: pb.EVENT_TYPE_INTERRUPTED,
    EventType.PARTICIPANT_JOINED: pb.EVENT_TYPE_PARTICIPANT_JOINED,
    EventType.PARTICIPANT_LEFT: pb.EVENT_TYPE_PARTICIPANT_LEFT,
    EventType.SESSION_PAUSED: pb.EVENT_TYPE_SESSION_PAUSED,
    EventType.SESSION_EXPIRING: pb.EVENT_TYPE_SESSION_EXPIRING,
    EventType.SESSION_ENDED: pb.EVENT_TYPE_SESSION_ENDED,
    EventType.FRAMES_DROPPED: pb.EVENT_TYPE_FRAMES_DROPPED,
    EventType.REPLACED: pb.EVENT_TYPE_REPLACED,
    EventType.VOICE_UNAVAILABLE: pb.EVENT_TYPE_VOICE_UNAVAILABLE,
}


def subscription(join: pb.Join) -> frozenset[Kind]:
    if not join.HasField("receive"):
        return frozenset({Kind.AUDIO, Kind.TEXT, Kind.VISEMES, Kind.VIDEO, Kind.EVENT})
    r = join.receive
    kinds = {
        Kind.AUDIO: r.audio,
        Kind.TEXT: r.text,
        Kind.VISEMES: r.visemes,
        Kind.VIDEO: r.video,
        Kind.EVENT: r.events,
    }
    return frozenset(k for k, wanted in kinds.items() if wanted)


def _trigger_in(req: pb.InteractRequest) -> i.InFrame | str:
    t = req.trigger
    try:
        payload = MessageToDict(t.payload)
    except ValueError:  # NaN or Infinity: a Struct can carry them, JSON (and the AI) cannot
        return "trigger.payload: numbers must be finite (NaN and Infinity have no JSON form)"
    return i.TriggerIn(t.name, payload, t.payload.ByteSize())


def _context_in(req: pb.InteractRequest) -> i.InFrame:
    c = req.context_update
    return i.ContextIn(
        c.dynamic_info if c.HasField("dynamic_info") else None,
        tuple(SceneItem(s.name, s.description) for s in c.scene) if c.replace_scene else None,
    )


def _interrupt_in(req: pb.InteractRequest) -> i.InFrame:
    it = req.interrupt
    return i.InterruptIn(it.interaction_id, it.played_ms if it.HasField("played_ms") else None)


def _reply_text_in(req: pb.InteractRequest) -> i.InFrame:
    rt = req.reply_text
    return i.ReplyTextIn(
        rt.text, rt.interaction_id, rt.offset_ms if rt.HasField("offset_ms") else None
    )


def _reply_visemes_in(req: pb.InteractRequest) -> i.InFrame:
    rv = req.reply_visemes
    return i.ReplyVisemesIn(
        tuple(VisemeMark(v.id, v.offset_ms, v.weight or 1.0) for v in rv.visemes),
        rv.interaction_id,
    )


# One reader per `InteractRequest.payload` field.
_IN: dict[str, Callable[[pb.InteractRequest], i.InFrame | str]] = {
    "audio": lambda r: i.AudioIn(r.audio.pcm, r.audio.sequence),
    "text": lambda r: i.TextIn(r.text.text),
    "trigger": _trigger_in,
    "context_update": _context_in,
    "playback_mark": lambda r: i.PlaybackMarkIn(
        r.playback_mark.interaction_id, r.playback_mark.played_ms
    ),
    "interrupt": _interrupt_in,
    "end_of_turn": lambda r: i.EndOfTurnIn(),
    "leave": lambda r: i.LeaveIn(r.leave.reason[:256]),
    "reply_start": lambda r: i.ReplyStartIn(r.reply_start.interaction_id),
    "reply_audio": lambda r: i.ReplyAudioIn(r.reply_audio.pcm, r.reply_audio.interaction_id),
    "reply_text": _reply_text_in,
    "reply_visemes": _reply_visemes_in,
    "reply_end": lambda r: i.ReplyEndIn(r.reply_end.interaction_id),
}


def in_frame(req: pb.InteractRequest) -> i.InFrame | str:
    """The frame a request carries, or a description of why it carries none."""
    which = req.WhichOneof("payload")
    read = _IN.get(which or "")
    if read is not None:
        return read(req)
    if which == "join":
        return "already joined: `join` is sent once, as the first message"
    return "empty message: set one of the payload fields"


def _participant(info: ParticipantInfo) -> pb.ParticipantInfo:
    return pb.ParticipantInfo(
        participant_id=info.id,
        role=ROLE_TO_PB[info.role],
        client=pb.ClientInfo(name=info.name, version=info.version, engine=info.engine),
    )


def _audio_out(frame: Audio, session: SessionPb | None) -> pb.InteractResponse:
    return pb.InteractResponse(
        audio=pb.AudioOutput(
            pcm=frame.pcm,
            sample_rate=frame.sample_rate,
            interaction_id=frame.interaction_id,
            offset_ms=frame.offset_ms,
            from_participant_id=frame.sender,
            source_sequence=frame.source_sequence,
        )
    )


def _text_out(frame: Text, session: SessionPb | None) -> pb.InteractResponse:
    return pb.InteractResponse(
        text=pb.TextOutput(
            text=frame.text,
            is_final=frame.is_final,
            interaction_id=frame.interaction_id,
            offset_ms=frame.offset_ms,
            from_participant_id=frame.sender,
            from_role=ROLE_TO_PB[frame.sender_role],
        )
    )


def _event_out(frame: Event, session: SessionPb | None) -> pb.InteractResponse:
    ev = pb.Event(
        type=_EVENT_TO_PB[frame.type],
        interaction_id=frame.interaction_id,
        reason=frame.reason,
        count=frame.count,
    )
    if frame.participant is not None:
        ev.participant.CopyFrom(_participant(frame.participant))
    if frame.time_left_ms is not None:
        ev.time_left.CopyFrom(convert.duration(frame.time_left_ms))
    if frame.state is not None:
        ev.state = convert.state_to_pb(frame.state)
    if frame.end_reason is not None:
        ev.end_reason = convert.end_reason_to_pb(frame.end_reason)
    return pb.InteractResponse(event=ev)


def _opened_out(frame: Opened, session: SessionPb | None) -> pb.InteractResponse:
    return pb.InteractResponse(
        opened=pb.Opened(
            session=session,
            participant_id=frame.participant.id,
            role=ROLE_TO_PB[frame.participant.role],
            audio_format=pb.AudioFormat(sample_rate=frame.sample_rate, chunk_ms=frame.chunk_ms),
            participants=[_participant(o) for o in frame.others],
        )
    )


def _transcript_out(frame: Transcript, session: SessionPb | None) -> pb.InteractResponse:
    return pb.InteractResponse(
        transcript=pb.Transcript(
            text=frame.text,
            is_final=frame.is_final,
            from_participant_id=frame.sender,
            speaker_id=frame.speaker_id,
        )
    )


def _visemes_out(frame: Visemes, session: SessionPb | None) -> pb.InteractResponse:
    marks = [pb.Viseme(id=v.id, offset_ms=v.offset_ms, weight=v.weight) for v in frame.visemes]
    return pb.InteractResponse(
        visemes=pb.Visemes(interaction_id=frame.interaction_id, visemes=marks)
    )


def _video_out(frame: Video, session: SessionPb | None) -> pb.InteractResponse:
    return pb.InteractResponse(
        video=pb.VideoFrame(
            image=frame.image,
            mime_type=frame.mime_type,
            width=frame.width,
            height=frame.height,
            interaction_id=frame.interaction_id,
            offset_ms=frame.offset_ms,
        )
    )


def _trigger_out(frame: TriggerOut, session: SessionPb | None) -> pb.InteractResponse:
    out = pb.InteractResponse(
        trigger=pb.TriggerOutput(
            trigger=pb.Trigger(name=frame.name), from_participant_id=frame.sender
        )
    )
    out.trigger.trigger.payload.update(frame.payload)
    return out


def _context_out(frame: ContextChanged, session: SessionPb | None) -> pb.InteractResponse:
    cu = pb.ContextUpdate(replace_scene=frame.scene is not None)
    if frame.dynamic_info is not None:
        cu.dynamic_info = frame.dynamic_info
    for item in frame.scene or ():
        cu.scene.add(name=item.name, description=item.description)
    return pb.InteractResponse(context_update=cu)


def _error_out(frame: StreamError, session: SessionPb | None) -> pb.InteractResponse:
    return pb.InteractResponse(
        error=pb.StreamError(
            code=code_number(frame.code), message=frame.message, field=frame.field_path
        )
    )


# One writer per frame type (`Close` has none: it ends the stream and is never sent).
_OUT: dict[type, Callable[[Any, SessionPb | None], pb.InteractResponse]] = {
    Audio: _audio_out,
    Text: _text_out,
    Event: _event_out,
    Opened: _opened_out,
    Transcript: _transcript_out,
    Visemes: _visemes_out,
    Video: _video_out,
    TriggerOut: _trigger_out,
    ContextChanged: _context_out,
    StreamError: _error_out,
}


def out_message(frame: OutFrame, session: SessionPb | None = None) -> pb.InteractResponse:
    """The response carrying `frame` (sequence and server_time are set by the writer)."""
    write = _OUT.get(type(frame))
    if write is None:
        raise TypeError(f"no protobuf form for {type(frame).__name__}")
    return write(frame, session)
