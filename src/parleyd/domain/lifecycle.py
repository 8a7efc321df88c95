"""The session state machine as one transition table (see docs/architecture.md, "lifecycle").

Every change of a session's state goes through `transition()`; the store applies its result with a
compare-and-set on (state, version), so two racing calls can never both take effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from parleyd.domain.errors import FailedPrecondition


class SessionState(StrEnum):
    CREATED = "created"
    ACTIVE = "active"
    PAUSED = "paused"
    TERMINATED = "terminated"
    EXPIRED = "expired"

    @property
    def ended(self) -> bool:
        return self in ENDED_STATES


ENDED_STATES = frozenset({SessionState.TERMINATED, SessionState.EXPIRED})
LIVE_STATES = frozenset({SessionState.CREATED, SessionState.ACTIVE, SessionState.PAUSED})


class SessionEvent(StrEnum):
    JOIN = "join"  # the first USER joined and the AI side is ready
    LEAVE = "leave"  # the last USER left or its stream broke
    DISCONNECT = "disconnect"  # DisconnectSession
    TERMINATE = "terminate"  # TerminateSession
    EXPIRE = "expire"  # max_duration used up, or resume_window ran out
    UPDATE = "update"  # UpdateSession: no state change, but only while not ended


class EndReason(StrEnum):
    TERMINATED = "terminated"
    MAX_DURATION = "max_duration"
    RESUME_WINDOW = "resume_window"


@dataclass(frozen=True, slots=True)
class Transition:
    source: SessionState
    event: SessionEvent
    target: SessionState

    @property
    def noop(self) -> bool:
        """True when the event is accepted but changes nothing (e.g. disconnecting a PAUSED one)."""
        return self.source == self.target

    @property
    def enters_active(self) -> bool:
        return self.target == SessionState.ACTIVE and self.source != SessionState.ACTIVE

    @property
    def leaves_active(self) -> bool:
        return self.source == SessionState.ACTIVE and self.target != SessionState.ACTIVE


_S = SessionState
_E = SessionEvent

# (state, event) -> next state. A pair that is missing is refused with FAILED_PRECONDITION.
TRANSITIONS: dict[tuple[SessionState, SessionEvent], SessionState] = {
    (_S.CREATED, _E.JOIN): _S.ACTIVE,
    (_S.CREATED, _E.TERMINATE): _S.TERMINATED,
    (_S.CREATED, _E.EXPIRE): _S.EXPIRED,
    (_S.CREATED, _E.UPDATE): _S.CREATED,
    (_S.ACTIVE, _E.LEAVE): _S.PAUSED,
    (_S.ACTIVE, _E.DISCONNECT): _S.PAUSED,
    (_S.ACTIVE, _E.TERMINATE): _S.TERMINATED,
    (_S.ACTIVE, _E.EXPIRE): _S.EXPIRED,
    (_S.ACTIVE, _E.UPDATE): _S.ACTIVE,
    (_S.PAUSED, _E.JOIN): _S.ACTIVE,
    (_S.PAUSED, _E.DISCONNECT): _S.PAUSED,
    (_S.PAUSED, _E.TERMINATE): _S.TERMINATED,
    (_S.PAUSED, _E.EXPIRE): _S.EXPIRED,
    (_S.PAUSED, _E.UPDATE): _S.PAUSED,
}

_REFUSAL_HINTS: dict[SessionEvent, str] = {
    _E.JOIN: "only a CREATED or PAUSED session can be joined",
    _E.LEAVE: "only an ACTIVE session can be left",
    _E.DISCONNECT: "only an ACTIVE or PAUSED session can be disconnected",
    _E.TERMINATE: "only a CREATED, ACTIVE or PAUSED session can be terminated",
    _E.EXPIRE: "only a CREATED, ACTIVE or PAUSED session can expire",
    _E.UPDATE: "an ended session cannot be changed",
}


def transition(state: SessionState, event: SessionEvent) -> Transition:
    """The transition `event` causes from `state`; raises FailedPrecondition when not allowed."""
    target = TRANSITIONS.get((state, event))
    if target is None:
        raise FailedPrecondition(f"session is {state.value.upper()}: {_REFUSAL_HINTS[event]}")
    return Transition(state, event, target)


def ensure_joinable(state: SessionState) -> None:
    """Refuses a join (gRPC stream, WebRTC peer) of an ended session with FAILED_PRECONDITION."""
    if state.ended:
        raise FailedPrecondition(f"session is {state.value.upper()}: it can no longer be joined")
