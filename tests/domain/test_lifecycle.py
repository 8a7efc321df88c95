"""The session state machine, checked cell by cell against the documented lifecycle.

The expected table below is written out by hand from the lifecycle the README ("Session
lifecycle") and docs/architecture.md describe; it is deliberately not derived from
`TRANSITIONS`, so a wrong entry there cannot agree with itself.
"""

from __future__ import annotations

import itertools

import pytest

from parleyd.domain.errors import FailedPrecondition
from parleyd.domain.lifecycle import (
    ENDED_STATES,
    LIVE_STATES,
    TRANSITIONS,
    SessionEvent,
    SessionState,
    transition,
)

C = "created"
A = "active"
P = "paused"
T = "terminated"
X = "expired"
NO = None  # refused with FAILED_PRECONDITION

# rows: state; columns: join, leave, disconnect, terminate, expire, update
EVENTS = ("join", "leave", "disconnect", "terminate", "expire", "update")
EXPECTED_ROWS: dict[str, tuple[str | None, ...]] = {
    #          join  leave disconnect terminate expire update
    "created": (A, NO, NO, T, X, C),
    "active": (NO, P, P, T, X, A),
    "paused": (A, NO, P, T, X, P),
    "terminated": (NO, NO, NO, NO, NO, NO),
    "expired": (NO, NO, NO, NO, NO, NO),
}
EXPECTED: dict[tuple[str, str], str | None] = {
    (state, event): target
    for state, row in EXPECTED_ROWS.items()
    for event, target in zip(EVENTS, row, strict=True)
}

ALL_CELLS = list(itertools.product(SessionState, SessionEvent))


def test_expected_table_covers_every_state_and_event() -> None:
    assert {s.value for s in SessionState} == set(EXPECTED_ROWS)
    assert {e.value for e in SessionEvent} == set(EVENTS)
    assert len(ALL_CELLS) == len(EXPECTED) == 30


@pytest.mark.parametrize(("state", "event"), ALL_CELLS, ids=lambda v: str(v.value))
def test_every_state_event_pair(state: SessionState, event: SessionEvent) -> None:
    expected = EXPECTED[(state.value, event.value)]
    if expected is None:
        with pytest.raises(FailedPrecondition) as info:
            transition(state, event)
        # The refusal names the state the session is in, in the casing the API shows.
        assert f"session is {state.value.upper()}" in info.value.message
        assert info.value.reason == "FAILED_PRECONDITION"
        assert (state, event) not in TRANSITIONS
        return
    step = transition(state, event)
    assert step.source == state
    assert step.event == event
    assert step.target == SessionState(expected)
    assert step.noop == (expected == state.value)
    assert step.enters_active == (expected == A and state.value != A)
    assert step.leaves_active == (state.value == A and expected != A)


def test_table_has_no_entries_beyond_the_expected_ones() -> None:
    allowed = {k for k, v in EXPECTED.items() if v is not None}
    assert {(s.value, e.value) for s, e in TRANSITIONS} == allowed


@pytest.mark.parametrize("state", sorted(ENDED_STATES))
def test_ended_states_are_final(state: SessionState) -> None:
    assert state.ended
    for event in SessionEvent:
        with pytest.raises(FailedPrecondition, match=state.value.upper()):
            transition(state, event)


def test_live_and_ended_partition_the_states() -> None:
    assert set(SessionState) == LIVE_STATES | ENDED_STATES
    assert not LIVE_STATES & ENDED_STATES
    assert not any(s.ended for s in LIVE_STATES)


@pytest.mark.parametrize(
    ("event", "hint"),
    [
        (SessionEvent.JOIN, "CREATED or PAUSED"),
        (SessionEvent.LEAVE, "ACTIVE"),
        (SessionEvent.DISCONNECT, "ACTIVE or PAUSED"),
        (SessionEvent.UPDATE, "ended"),
    ],
)
def test_refusal_explains_which_states_allow_the_event(event: SessionEvent, hint: str) -> None:
    with pytest.raises(FailedPrecondition) as info:
        transition(SessionState.TERMINATED, event)
    assert hint in info.value.message


def test_a_full_conversation_walks_the_table() -> None:
    state = SessionState.CREATED
    entered = left = 0
    for event in ("join", "leave", "join", "disconnect", "disconnect", "join", "terminate"):
        step = transition(state, SessionEvent(event))
        entered += step.enters_active
        left += step.leaves_active
        state = step.target
    assert state == SessionState.TERMINATED
    # Three ACTIVE stretches: each one opened and closed exactly once.
    assert entered == left == 3
