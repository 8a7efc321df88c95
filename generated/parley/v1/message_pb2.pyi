import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MessageRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_ROLE_UNSPECIFIED: _ClassVar[MessageRole]
    MESSAGE_ROLE_USER: _ClassVar[MessageRole]
    MESSAGE_ROLE_AGENT: _ClassVar[MessageRole]
    MESSAGE_ROLE_SYSTEM: _ClassVar[MessageRole]
MESSAGE_ROLE_UNSPECIFIED: MessageRole
MESSAGE_ROLE_USER: MessageRole
MESSAGE_ROLE_AGENT: MessageRole
MESSAGE_ROLE_SYSTEM: MessageRole

class Message(_message.Message):
    __slots__ = ("index", "role", "text", "interaction_id", "create_time", "interrupted", "inherited_from_session_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    INHERITED_FROM_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    index: int
    role: MessageRole
    text: str
    interaction_id: str
    create_time: _timestamp_pb2.Timestamp
    interrupted: bool
    inherited_from_session_id: str
    def __init__(self, index: _Optional[int] = ..., role: _Optional[_Union[MessageRole, str]] = ..., text: _Optional[str] = ..., interaction_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interrupted: _Optional[bool] = ..., inherited_from_session_id: _Optional[str] = ...) -> None: ...
