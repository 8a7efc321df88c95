"""Translation between protobuf messages and domain objects. No rules live here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from parley.v1 import message_pb2, session_pb2

from parleyd.domain.errors import InvalidArgument
from parleyd.domain.lifecycle import EndReason, SessionState
from parleyd.domain.session import (
    AgentMode,
    ConnectionType,
    Message,
    MessageRole,
    SceneItem,
    Session,
    SessionSpec,
)

_STATE_TO_PB = {
    SessionState.CREATED: session_pb2.SESSION_STATE_CREATED,
    SessionState.ACTIVE: session_pb2.SESSION_STATE_ACTIVE,
    SessionState.PAUSED: session_pb2.SESSION_STATE_PAUSED,
    SessionState.TERMINATED: session_pb2.SESSION_STATE_TERMINATED,
    SessionState.EXPIRED: session_pb2.SESSION_STATE_EXPIRED,
}
_PB_TO_STATE = {v: k for k, v in _STATE_TO_PB.items()}
_CONN_TO_PB = {
    ConnectionType.AUDIO: session_pb2.CONNECTION_TYPE_AUDIO,
    ConnectionType.VIDEO: session_pb2.CONNECTION_TYPE_VIDEO,
    ConnectionType.TEXT: session_pb2.CONNECTION_TYPE_TEXT,
}
_PB_TO_CONN = {v: k for k, v in _CONN_TO_PB.items()}
_END_TO_PB = {
    EndReason.TERMINATED: session_pb2.END_REASON_TERMINATED,
    EndReason.MAX_DURATION: session_pb2.END_REASON_MAX_DURATION,
    EndReason.RESUME_WINDOW: session_pb2.END_REASON_RESUME_WINDOW,
}
_MODE_TO_PB = {
    AgentMode.BUILTIN: session_pb2.AGENT_MODE_BUILTIN,
    AgentMode.EXTERNAL: session_pb2.AGENT_MODE_EXTERNAL,
}
_PB_TO_MODE = {v: k for k, v in _MODE_TO_PB.items()}
_ROLE_TO_PB = {
    MessageRole.USER: message_pb2.MESSAGE_ROLE_USER,
    MessageRole.AGENT: message_pb2.MESSAGE_ROLE_AGENT,
    MessageRole.SYSTEM: message_pb2.MESSAGE_ROLE_SYSTEM,
}


def timestamp(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def duration(ms: int) -> Duration:
    return Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


# The range google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
T = TypeVar("T")

_TIMESTAMP_MIN_SECONDS = -62_135_596_800
_TIMESTAMP_MAX_SECONDS = 253_402_300_799


def timestamp_ms(ts: Timestamp, field: str) -> int:
    # Out of range, the milliseconds overflow the database's BIGINT: refuse them as the caller's.
    if not _TIMESTAMP_MIN_SECONDS <= ts.seconds <= _TIMESTAMP_MAX_SECONDS:
        raise InvalidArgument.field(field, "must be between 0001-01-01 and 9999-12-31")
    if not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument.field(field, "nanos must be between 0 and 999,999,999")
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def duration_ms(d: Duration, field: str) -> int:
    if d.seconds < 0 or d.nanos < 0:
        raise InvalidArgument.field(field, "must not be negative")
    if d.nanos >= 1_000_000_000:
        raise InvalidArgument.field(field, "nanos must be below 1,000,000,000")
    return d.seconds * 1000 + d.nanos // 1_000_000


def _from_pb(value: int, table: Mapping[Any, T], unset: T, name: str, field: str) -> T:
    """The domain value of a proto enum; `unset` for 0 (UNSPECIFIED); unknown numbers refused."""
    if value == 0:
        return unset
    try:
        return table[value]
    except KeyError:
        raise InvalidArgument.field(field, f"{value} is not a {name}") from None


def state_from_pb(value: int, field: str = "state") -> SessionState | None:
    return _from_pb(value, _PB_TO_STATE, None, "SessionState", field)


def connection_type_from_pb(value: int, field: str) -> ConnectionType:
    return _from_pb(value, _PB_TO_CONN, ConnectionType.AUDIO, "ConnectionType", field)


def agent_mode_from_pb(value: int, field: str) -> AgentMode:
    return _from_pb(value, _PB_TO_MODE, AgentMode.BUILTIN, "AgentMode", field)


def spec_from_pb(pb: session_pb2.Session, prefix: str = "session.") -> SessionSpec:
    return SessionSpec(
        agent_id=pb.agent_id,
        user_id=pb.user_id,
        profile=pb.profile,
        avatar_id=pb.avatar_id,
        connection_type=connection_type_from_pb(pb.connection_type, prefix + "connection_type"),
        speaker_id=pb.speaker_id,
        situation=pb.situation,
        dynamic_info=pb.dynamic_info,
        scene=[SceneItem(s.name, s.description) for s in pb.scene],
        metadata=dict(pb.metadata),
        max_duration_ms=(
            duration_ms(pb.max_duration, prefix + "max_duration")
            if pb.HasField("max_duration")
            else None
        ),
        resume_window_ms=(
            duration_ms(pb.resume_window, prefix + "resume_window")
            if pb.HasField("resume_window")
            else None
        ),
        continue_from_session_id=pb.continue_from_session_id,
        render_templates=pb.render_templates,
        agent_mode=agent_mode_from_pb(pb.agent_mode, prefix + "agent_mode"),
    )


def session_to_pb(s: Session, now_ms: int) -> session_pb2.Session:
    pb = session_pb2.Session(
        id=s.id,
        agent_id=s.agent_id,
        user_id=s.user_id,
        profile=s.profile,
        avatar_id=s.avatar_id,
        connection_type=_CONN_TO_PB[s.connection_type],
        speaker_id=s.speaker_id,
        situation=s.situation,
        dynamic_info=s.dynamic_info,
        scene=[session_pb2.SceneItem(name=i.name, description=i.description) for i in s.scene],
        metadata=s.metadata,
        max_duration=duration(s.max_duration_ms),
        resume_window=duration(s.resume_window_ms),
        continue_from_session_id=s.continue_from_session_id,
        render_templates=s.render_templates,
        state=_STATE_TO_PB[s.state],
        create_time=timestamp(s.create_ms),
        update_time=timestamp(s.update_ms),
        duration=duration(s.duration_at(now_ms)),
        summary=s.summary,
        rendered_situation=s.rendered_situation,
        end_reason=_END_TO_PB[s.end_reason] if s.end_reason else session_pb2.END_REASON_UNSPECIFIED,
        agent_mode=_MODE_TO_PB[s.agent_mode],
    )
    if s.start_ms is not None:
        pb.start_time.CopyFrom(timestamp(s.start_ms))
    if s.end_ms is not None:
        pb.end_time.CopyFrom(timestamp(s.end_ms))
    if s.expire_at_ms is not None and s.state != SessionState.TERMINATED:
        pb.expire_time.CopyFrom(timestamp(s.expire_at_ms))
    return pb


def state_to_pb(state: SessionState) -> session_pb2.SessionState:
    return _STATE_TO_PB[state]


def end_reason_to_pb(reason: EndReason) -> session_pb2.EndReason:
    return _END_TO_PB[reason]


def message_to_pb(m: Message) -> message_pb2.Message:
    return message_pb2.Message(
        index=m.index,
        role=_ROLE_TO_PB[m.role],
        text=m.text,
        interaction_id=m.interaction_id,
        create_time=timestamp(m.create_ms),
        interrupted=m.interrupted,
        inherited_from_session_id=m.inherited_from_session_id,
    )
