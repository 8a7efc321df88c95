import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from parley.v1 import session_pb2 as _session_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_AGENT: _ClassVar[Role]
    ROLE_OBSERVER: _ClassVar[Role]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_SPEECH_STARTED: _ClassVar[EventType]
    EVENT_TYPE_SPEECH_STOPPED: _ClassVar[EventType]
    EVENT_TYPE_RESPONSE_STARTED: _ClassVar[EventType]
    EVENT_TYPE_RESPONSE_DONE: _ClassVar[EventType]
    EVENT_TYPE_INTERRUPTED: _ClassVar[EventType]
    EVENT_TYPE_PARTICIPANT_JOINED: _ClassVar[EventType]
    EVENT_TYPE_PARTICIPANT_LEFT: _ClassVar[EventType]
    EVENT_TYPE_SESSION_PAUSED: _ClassVar[EventType]
    EVENT_TYPE_SESSION_EXPIRING: _ClassVar[EventType]
    EVENT_TYPE_SESSION_ENDED: _ClassVar[EventType]
    EVENT_TYPE_FRAMES_DROPPED: _ClassVar[EventType]
    EVENT_TYPE_REPLACED: _ClassVar[EventType]
    EVENT_TYPE_VOICE_UNAVAILABLE: _ClassVar[EventType]
ROLE_UNSPECIFIED: Role
ROLE_USER: Role
ROLE_AGENT: Role
ROLE_OBSERVER: Role
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_SPEECH_STARTED: EventType
EVENT_TYPE_SPEECH_STOPPED: EventType
EVENT_TYPE_RESPONSE_STARTED: EventType
EVENT_TYPE_RESPONSE_DONE: EventType
EVENT_TYPE_INTERRUPTED: EventType
EVENT_TYPE_PARTICIPANT_JOINED: EventType
EVENT_TYPE_PARTICIPANT_LEFT: EventType
EVENT_TYPE_SESSION_PAUSED: EventType
EVENT_TYPE_SESSION_EXPIRING: EventType
EVENT_TYPE_SESSION_ENDED: EventType
EVENT_TYPE_FRAMES_DROPPED: EventType
EVENT_TYPE_REPLACED: EventType
EVENT_TYPE_VOICE_UNAVAILABLE: EventType

class InteractRequest(_message.Message):
    __slots__ = ("join", "audio", "text", "trigger", "context_update", "playback_mark", "interrupt", "end_of_turn", "leave", "reply_start", "reply_audio", "reply_text", "reply_visemes", "reply_end")
    JOIN_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_UPDATE_FIELD_NUMBER: _ClassVar[int]
    PLAYBACK_MARK_FIELD_NUMBER: _ClassVar[int]
    INTERRUPT_FIELD_NUMBER: _ClassVar[int]
    END_OF_TURN_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    REPLY_START_FIELD_NUMBER: _ClassVar[int]
    REPLY_AUDIO_FIELD_NUMBER: _ClassVar[int]
    REPLY_TEXT_FIELD_NUMBER: _ClassVar[int]
    REPLY_VISEMES_FIELD_NUMBER: _ClassVar[int]
    REPLY_END_FIELD_NUMBER: _ClassVar[int]
    join: Join
    audio: AudioInput
    text: TextInput
    trigger: Trigger
    context_update: ContextUpdate
    playback_mark: PlaybackMark
    interrupt: Interrupt
    end_of_turn: EndOfTurn
    leave: Leave
    reply_start: ReplyStart
    reply_audio: ReplyAudio
    reply_text: ReplyText
    reply_visemes: ReplyVisemes
    reply_end: ReplyEnd
    def __init__(self, join: _Optional[_Union[Join, _Mapping]] = ..., audio: _Optional[_Union[AudioInput, _Mapping]] = ..., text: _Optional[_Union[TextInput, _Mapping]] = ..., trigger: _Optional[_Union[Trigger, _Mapping]] = ..., context_update: _Optional[_Union[ContextUpdate, _Mapping]] = ..., playback_mark: _Optional[_Union[PlaybackMark, _Mapping]] = ..., interrupt: _Optional[_Union[Interrupt, _Mapping]] = ..., end_of_turn: _Optional[_Union[EndOfTurn, _Mapping]] = ..., leave: _Optional[_Union[Leave, _Mapping]] = ..., reply_start: _Optional[_Union[ReplyStart, _Mapping]] = ..., reply_audio: _Optional[_Union[ReplyAudio, _Mapping]] = ..., reply_text: _Optional[_Union[ReplyText, _Mapping]] = ..., reply_visemes: _Optional[_Union[ReplyVisemes, _Mapping]] = ..., reply_end: _Optional[_Union[ReplyEnd, _Mapping]] = ...) -> None: ...

class InteractResponse(_message.Message):
    __slots__ = ("sequence", "server_time", "opened", "audio", "text", "transcript", "visemes", "video", "event", "error", "trigger", "context_update")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    OPENED_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    VISEMES_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_UPDATE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    server_time: _timestamp_pb2.Timestamp
    opened: Opened
    audio: AudioOutput
    text: TextOutput
    transcript: Transcript
    visemes: Visemes
    video: VideoFrame
    event: Event
    error: StreamError
    trigger: TriggerOutput
    context_update: ContextUpdate
    def __init__(self, sequence: _Optional[int] = ..., server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., opened: _Optional[_Union[Opened, _Mapping]] = ..., audio: _Optional[_Union[AudioOutput, _Mapping]] = ..., text: _Optional[_Union[TextOutput, _Mapping]] = ..., transcript: _Optional[_Union[Transcript, _Mapping]] = ..., visemes: _Optional[_Union[Visemes, _Mapping]] = ..., video: _Optional[_Union[VideoFrame, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ..., trigger: _Optional[_Union[TriggerOutput, _Mapping]] = ..., context_update: _Optional[_Union[ContextUpdate, _Mapping]] = ...) -> None: ...

class Join(_message.Message):
    __slots__ = ("session_id", "access_token", "role", "audio_format", "receive", "client", "takeover", "speaker_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    TAKEOVER_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    access_token: str
    role: Role
    audio_format: AudioFormat
    receive: Subscription
    client: ClientInfo
    takeover: bool
    speaker_id: str
    def __init__(self, session_id: _Optional[str] = ..., access_token: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., audio_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., receive: _Optional[_Union[Subscription, _Mapping]] = ..., client: _Optional[_Union[ClientInfo, _Mapping]] = ..., takeover: _Optional[bool] = ..., speaker_id: _Optional[str] = ...) -> None: ...

class AudioFormat(_message.Message):
    __slots__ = ("sample_rate", "chunk_ms")
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_MS_FIELD_NUMBER: _ClassVar[int]
    sample_rate: int
    chunk_ms: int
    def __init__(self, sample_rate: _Optional[int] = ..., chunk_ms: _Optional[int] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("audio", "text", "visemes", "video", "events")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VISEMES_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    audio: bool
    text: bool
    visemes: bool
    video: bool
    events: bool
    def __init__(self, audio: _Optional[bool] = ..., text: _Optional[bool] = ..., visemes: _Optional[bool] = ..., video: _Optional[bool] = ..., events: _Optional[bool] = ...) -> None: ...

class ClientInfo(_message.Message):
    __slots__ = ("name", "version", "engine")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    engine: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., engine: _Optional[str] = ...) -> None: ...

class AudioInput(_message.Message):
    __slots__ = ("pcm", "sequence")
    PCM_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    sequence: int
    def __init__(self, pcm: _Optional[bytes] = ..., sequence: _Optional[int] = ...) -> None: ...

class TextInput(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class Trigger(_message.Message):
    __slots__ = ("name", "payload")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    name: str
    payload: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ContextUpdate(_message.Message):
    __slots__ = ("dynamic_info", "scene", "replace_scene")
    DYNAMIC_INFO_FIELD_NUMBER: _ClassVar[int]
    SCENE_FIELD_NUMBER: _ClassVar[int]
    REPLACE_SCENE_FIELD_NUMBER: _ClassVar[int]
    dynamic_info: str
    scene: _containers.RepeatedCompositeFieldContainer[_session_pb2.SceneItem]
    replace_scene: bool
    def __init__(self, dynamic_info: _Optional[str] = ..., scene: _Optional[_Iterable[_Union[_session_pb2.SceneItem, _Mapping]]] = ..., replace_scene: _Optional[bool] = ...) -> None: ...

class PlaybackMark(_message.Message):
    __slots__ = ("interaction_id", "played_ms")
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYED_MS_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    played_ms: int
    def __init__(self, interaction_id: _Optional[str] = ..., played_ms: _Optional[int] = ...) -> None: ...

class Interrupt(_message.Message):
    __slots__ = ("interaction_id", "played_ms")
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYED_MS_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    played_ms: int
    def __init__(self, interaction_id: _Optional[str] = ..., played_ms: _Optional[int] = ...) -> None: ...

class EndOfTurn(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Leave(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class ReplyStart(_message.Message):
    __slots__ = ("interaction_id",)
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    def __init__(self, interaction_id: _Optional[str] = ...) -> None: ...

class ReplyAudio(_message.Message):
    __slots__ = ("interaction_id", "pcm")
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    pcm: bytes
    def __init__(self, interaction_id: _Optional[str] = ..., pcm: _Optional[bytes] = ...) -> None: ...

class ReplyText(_message.Message):
    __slots__ = ("interaction_id", "text", "offset_ms")
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    text: str
    offset_ms: int
    def __init__(self, interaction_id: _Optional[str] = ..., text: _Optional[str] = ..., offset_ms: _Optional[int] = ...) -> None: ...

class ReplyVisemes(_message.Message):
    __slots__ = ("interaction_id", "visemes")
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    VISEMES_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    visemes: _containers.RepeatedCompositeFieldContainer[Viseme]
    def __init__(self, interaction_id: _Optional[str] = ..., visemes: _Optional[_Iterable[_Union[Viseme, _Mapping]]] = ...) -> None: ...

class ReplyEnd(_message.Message):
    __slots__ = ("interaction_id",)
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    def __init__(self, interaction_id: _Optional[str] = ...) -> None: ...

class Opened(_message.Message):
    __slots__ = ("session", "participant_id", "role", "audio_format", "participants")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    session: _session_pb2.Session
    participant_id: str
    role: Role
    audio_format: AudioFormat
    participants: _containers.RepeatedCompositeFieldContainer[ParticipantInfo]
    def __init__(self, session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ..., participant_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., audio_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., participants: _Optional[_Iterable[_Union[ParticipantInfo, _Mapping]]] = ...) -> None: ...

class ParticipantInfo(_message.Message):
    __slots__ = ("participant_id", "role", "client")
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    participant_id: str
    role: Role
    client: ClientInfo
    def __init__(self, participant_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., client: _Optional[_Union[ClientInfo, _Mapping]] = ...) -> None: ...

class AudioOutput(_message.Message):
    __slots__ = ("pcm", "sample_rate", "interaction_id", "offset_ms", "from_participant_id", "source_sequence")
    PCM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    FROM_PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    sample_rate: int
    interaction_id: str
    offset_ms: int
    from_participant_id: str
    source_sequence: int
    def __init__(self, pcm: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., interaction_id: _Optional[str] = ..., offset_ms: _Optional[int] = ..., from_participant_id: _Optional[str] = ..., source_sequence: _Optional[int] = ...) -> None: ...

class TextOutput(_message.Message):
    __slots__ = ("text", "is_final", "interaction_id", "offset_ms", "from_participant_id", "from_role")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    FROM_PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ROLE_FIELD_NUMBER: _ClassVar[int]
    text: str
    is_final: bool
    interaction_id: str
    offset_ms: int
    from_participant_id: str
    from_role: Role
    def __init__(self, text: _Optional[str] = ..., is_final: _Optional[bool] = ..., interaction_id: _Optional[str] = ..., offset_ms: _Optional[int] = ..., from_participant_id: _Optional[str] = ..., from_role: _Optional[_Union[Role, str]] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("text", "is_final", "from_participant_id", "speaker_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    FROM_PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    is_final: bool
    from_participant_id: str
    speaker_id: str
    def __init__(self, text: _Optional[str] = ..., is_final: _Optional[bool] = ..., from_participant_id: _Optional[str] = ..., speaker_id: _Optional[str] = ...) -> None: ...

class TriggerOutput(_message.Message):
    __slots__ = ("trigger", "from_participant_id")
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    FROM_PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    trigger: Trigger
    from_participant_id: str
    def __init__(self, trigger: _Optional[_Union[Trigger, _Mapping]] = ..., from_participant_id: _Optional[str] = ...) -> None: ...

class Visemes(_message.Message):
    __slots__ = ("interaction_id", "visemes")
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    VISEMES_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    visemes: _containers.RepeatedCompositeFieldContainer[Viseme]
    def __init__(self, interaction_id: _Optional[str] = ..., visemes: _Optional[_Iterable[_Union[Viseme, _Mapping]]] = ...) -> None: ...

class Viseme(_message.Message):
    __slots__ = ("id", "offset_ms", "weight")
    ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    id: str
    offset_ms: int
    weight: float
    def __init__(self, id: _Optional[str] = ..., offset_ms: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class VideoFrame(_message.Message):
    __slots__ = ("image", "mime_type", "width", "height", "interaction_id", "offset_ms")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    mime_type: str
    width: int
    height: int
    interaction_id: str
    offset_ms: int
    def __init__(self, image: _Optional[bytes] = ..., mime_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., interaction_id: _Optional[str] = ..., offset_ms: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "interaction_id", "participant", "time_left", "reason", "count", "state", "end_reason")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    TIME_LEFT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    type: EventType
    interaction_id: str
    participant: ParticipantInfo
    time_left: _duration_pb2.Duration
    reason: str
    count: int
    state: _session_pb2.SessionState
    end_reason: _session_pb2.EndReason
    def __init__(self, type: _Optional[_Union[EventType, str]] = ..., interaction_id: _Optional[str] = ..., participant: _Optional[_Union[ParticipantInfo, _Mapping]] = ..., time_left: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ..., count: _Optional[int] = ..., state: _Optional[_Union[_session_pb2.SessionState, str]] = ..., end_reason: _Optional[_Union[_session_pb2.EndReason, str]] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...
