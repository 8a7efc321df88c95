import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_MODE_UNSPECIFIED: _ClassVar[AgentMode]
    AGENT_MODE_BUILTIN: _ClassVar[AgentMode]
    AGENT_MODE_EXTERNAL: _ClassVar[AgentMode]

class ConnectionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONNECTION_TYPE_UNSPECIFIED: _ClassVar[ConnectionType]
    CONNECTION_TYPE_AUDIO: _ClassVar[ConnectionType]
    CONNECTION_TYPE_VIDEO: _ClassVar[ConnectionType]
    CONNECTION_TYPE_TEXT: _ClassVar[ConnectionType]

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_CREATED: _ClassVar[SessionState]
    SESSION_STATE_ACTIVE: _ClassVar[SessionState]
    SESSION_STATE_PAUSED: _ClassVar[SessionState]
    SESSION_STATE_TERMINATED: _ClassVar[SessionState]
    SESSION_STATE_EXPIRED: _ClassVar[SessionState]

class EndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_REASON_UNSPECIFIED: _ClassVar[EndReason]
    END_REASON_TERMINATED: _ClassVar[EndReason]
    END_REASON_MAX_DURATION: _ClassVar[EndReason]
    END_REASON_RESUME_WINDOW: _ClassVar[EndReason]
AGENT_MODE_UNSPECIFIED: AgentMode
AGENT_MODE_BUILTIN: AgentMode
AGENT_MODE_EXTERNAL: AgentMode
CONNECTION_TYPE_UNSPECIFIED: ConnectionType
CONNECTION_TYPE_AUDIO: ConnectionType
CONNECTION_TYPE_VIDEO: ConnectionType
CONNECTION_TYPE_TEXT: ConnectionType
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_CREATED: SessionState
SESSION_STATE_ACTIVE: SessionState
SESSION_STATE_PAUSED: SessionState
SESSION_STATE_TERMINATED: SessionState
SESSION_STATE_EXPIRED: SessionState
END_REASON_UNSPECIFIED: EndReason
END_REASON_TERMINATED: EndReason
END_REASON_MAX_DURATION: EndReason
END_REASON_RESUME_WINDOW: EndReason

class Session(_message.Message):
    __slots__ = ("id", "agent_id", "user_id", "profile", "avatar_id", "connection_type", "speaker_id", "situation", "dynamic_info", "scene", "metadata", "max_duration", "resume_window", "continue_from_session_id", "render_templates", "state", "create_time", "update_time", "start_time", "end_time", "expire_time", "duration", "summary", "rendered_situation", "end_reason", "agent_mode")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_ID_FIELD_NUMBER: _ClassVar[int]
    SITUATION_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_INFO_FIELD_NUMBER: _ClassVar[int]
    SCENE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    RESUME_WINDOW_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_FROM_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RENDER_TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    RENDERED_SITUATION_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    AGENT_MODE_FIELD_NUMBER: _ClassVar[int]
    id: str
    agent_id: str
    user_id: str
    profile: str
    avatar_id: str
    connection_type: ConnectionType
    speaker_id: str
    situation: str
    dynamic_info: str
    scene: _containers.RepeatedCompositeFieldContainer[SceneItem]
    metadata: _containers.ScalarMap[str, str]
    max_duration: _duration_pb2.Duration
    resume_window: _duration_pb2.Duration
    continue_from_session_id: str
    render_templates: bool
    state: SessionState
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    summary: str
    rendered_situation: str
    end_reason: EndReason
    agent_mode: AgentMode
    def __init__(self, id: _Optional[str] = ..., agent_id: _Optional[str] = ..., user_id: _Optional[str] = ..., profile: _Optional[str] = ..., avatar_id: _Optional[str] = ..., connection_type: _Optional[_Union[ConnectionType, str]] = ..., speaker_id: _Optional[str] = ..., situation: _Optional[str] = ..., dynamic_info: _Optional[str] = ..., scene: _Optional[_Iterable[_Union[SceneItem, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., max_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., resume_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., continue_from_session_id: _Optional[str] = ..., render_templates: _Optional[bool] = ..., state: _Optional[_Union[SessionState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., summary: _Optional[str] = ..., rendered_situation: _Optional[str] = ..., end_reason: _Optional[_Union[EndReason, str]] = ..., agent_mode: _Optional[_Union[AgentMode, str]] = ...) -> None: ...

class SceneItem(_message.Message):
    __slots__ = ("name", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...
