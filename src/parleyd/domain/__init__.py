"""Pure domain model of parleyd: sessions, their lifecycle, ids, limits and errors. No I/O here.

Modules: `session` (the resource), `lifecycle` (the transition table), `errors` (what a caller
can do wrong, by kind), `limits` (documented limits), `validation`, `templates`, `paging`, `ids`,
`durations`.
"""

from parleyd.domain.errors import (
    AlreadyExists,
    ErrorKind,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ParleyError,
    ResourceExhausted,
    Unauthenticated,
)
from parleyd.domain.lifecycle import (
    EndReason,
    SessionEvent,
    SessionState,
    Transition,
    ensure_joinable,
    transition,
)
from parleyd.domain.session import (
    AgentMode,
    ApiKey,
    ConnectionType,
    Message,
    MessageRole,
    SceneItem,
    Session,
    SessionSpec,
    SessionUsage,
)

__all__ = [
    "AgentMode",
    "AlreadyExists",
    "ApiKey",
    "ConnectionType",
    "EndReason",
    "ErrorKind",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "Message",
    "MessageRole",
    "NotFound",
    "ParleyError",
    "ResourceExhausted",
    "SceneItem",
    "Session",
    "SessionEvent",
    "SessionSpec",
    "SessionState",
    "SessionUsage",
    "Transition",
    "Unauthenticated",
    "ensure_joinable",
    "transition",
]
