"""The session lifecycle as a hypothesis state machine, on a real SessionManager and SQLite file.

Rules: create, join, leave, disconnect, terminate, expire (the room's timer: EXPIRE applied
directly), sweep (the expiry sweep, `expire_due`), update, and time passing (the manager's clock
is the machine's). A model driven by `parleyd.domain.lifecycle.TRANSITIONS` predicts each
session's state: a move the table refuses must raise FailedPrecondition and change nothing
(version and state as before), an accepted no-op must write nothing, a real move bumps the version
once; the sweep expires exactly the live sessions whose stored expiry has passed.

Invariants after every step, for every session: the state is a legal value and the model's; the
session read through the manager (its cache) is the row in the file; usage (duration) is never
negative and never decreases, and GetUsage's figure for the session is its duration; an ended
session stays ended; end_reason (and end_time) are set iff ended, with the reason its end had;
start_time is set iff ACTIVE was ever entered, and never changes once set; active_since is set iff
ACTIVE.

Each machine has its own event loop (an `asyncio.Runner` kept on the machine) that runs every
rule; pytest-asyncio's loop is not involved. Budgets: tests/fuzz/profiles.py ("lifecycle").
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from parleyd.domain.errors import FailedPrecondition
from parleyd.domain.lifecycle import TRANSITIONS, EndReason, SessionEvent, SessionState
from parleyd.domain.session import AgentMode, Session, SessionSpec
from parleyd.manager import SessionManager
from parleyd.store import Repository, open_database
from tests.fuzz.profiles import fuzz_settings

T = TypeVar("T")
T0 = 1_700_000_000_000
KEY_MAX_MS = 3_600_000


@dataclass
class Model:
    """What the machine expects of one session."""

    state: SessionState
    entered_active: bool = False
    end_reason: EndReason | None = None
    duration_ms: int = 0  # the most seen so far (usage never decreases)
    start_ms: int | None = None  # once set, never changes


class LifecycleMachine(RuleBasedStateMachine):
    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.dir = Path(tempfile.mkdtemp(prefix="parleyd-lifecycle-"))
        self.db_path = self.dir / "parleyd.db"
        self.now = T0
        self.model: dict[str, Model] = {}
        self.db = self.run(open_database(f"sqlite+aiosqlite:///{self.db_path}"))
        self.repo = Repository(self.db)
        self.manager = SessionManager(
            self.repo, default_resume_window_ms=60_000, clock=lambda: self.now
        )
        self.key, self.plaintext = self.run(
            self.repo.create_api_key(name="machine", max_session_duration_ms=KEY_MAX_MS, now_ms=T0)
        )

    def run(self, work: Awaitable[T]) -> T:
        async def awaited() -> T:
            return await work

        return self.runner.run(awaited())

    def teardown(self) -> None:
        try:
            self.run(self.db.close())
        finally:
            self.runner.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def load(self, sid: str) -> Session:
        return self.run(self.manager.get_session(self.key, sid))

    # -- rules --------------------------------------------------------------------------------

    @initialize(target=sessions)
    def first(self) -> str:
        return self._create(AgentMode.EXTERNAL, None, None)

    @rule(
        target=sessions,
        mode=st.sampled_from(AgentMode),
        max_s=st.none() | st.integers(1, KEY_MAX_MS // 1000),
        window_s=st.none() | st.integers(1, 3_600),
    )
    def create(self, mode: AgentMode, max_s: int | None, window_s: int | None) -> str:
        return self._create(mode, max_s, window_s)

    def _create(self, mode: AgentMode, max_s: int | None, window_s: int | None) -> str:
        spec = SessionSpec(
            agent_id="npc",
            agent_mode=mode,
            max_duration_ms=None if max_s is None else max_s * 1000,
            resume_window_ms=None if window_s is None else window_s * 1000,
        )
        created = self.run(
            self.manager.create_session(
                self.key, spec, request_id="", api_key_plaintext=self.plaintext
            )
        )
        s = created.session
        assert s.state == SessionState.CREATED
        assert s.version == 1
        assert s.duration_ms == 0
        assert s.start_ms is None
        assert s.end_ms is None
        self.model[s.id] = Model(SessionState.CREATED)
        return s.id

    @rule(sid=sessions)
    def join(self, sid: str) -> None:
        self._move(sid, SessionEvent.JOIN, lambda: self.manager.apply(sid, SessionEvent.JOIN))

    @rule(sid=sessions)
    def leave(self, sid: str) -> None:
        self._move(sid, SessionEvent.LEAVE, lambda: self.manager.apply(sid, SessionEvent.LEAVE))

    @rule(sid=sessions)
    def disconnect(self, sid: str) -> None:
        self._move(
            sid,
            SessionEvent.DISCONNECT,
            lambda: self.manager.disconnect_session(self.key, sid),
        )

    @rule(sid=sessions)
    def terminate(self, sid: str) -> None:
        self._move(
            sid, SessionEvent.TERMINATE, lambda: self.manager.terminate_session(self.key, sid)
        )

    @rule(sid=sessions)
    def expire(self, sid: str) -> None:
        self._move(sid, SessionEvent.EXPIRE, lambda: self.manager.apply(sid, SessionEvent.EXPIRE))

    @rule(
        sid=sessions,
        change=st.sampled_from(("dynamic_info", "max_duration", "resume_window", "metadata")),
        seconds=st.integers(1, 3_600),
    )
    def update(self, sid: str, change: str, seconds: int) -> None:
        spec = SessionSpec(
            dynamic_info=f"now {self.now}",
            max_duration_ms=seconds * 1000,
            resume_window_ms=seconds * 1000,
            metadata={"t": str(self.now)},
        )
        self._move(
            sid,
            SessionEvent.UPDATE,
            lambda: self.manager.update_session(self.key, sid, spec, [change]),
        )

    @rule(ms=st.sampled_from((0, 1, 999, 1_000, 59_999, 60_000, 600_000)) | st.integers(0, 10**7))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @rule()
    def sweep(self) -> None:
        """The expiry sweep ends exactly the live sessions whose stored expiry has passed."""
        before = {sid: self.load(sid) for sid in self.model}
        due = {
            sid
            for sid, s in before.items()
            if not s.state.ended and s.expire_at_ms is not None and s.expire_at_ms <= self.now
        }
        expired = {s.id for s in self.run(self.manager.expire_due())}
        assert expired == due, (sorted(expired), sorted(due))
        for sid in due:
            m = self.model[sid]
            was = before[sid]
            m.end_reason = (
                EndReason.MAX_DURATION
                if was.state == SessionState.ACTIVE
                else EndReason.RESUME_WINDOW
            )
            m.state = SessionState.EXPIRED
            after = self.load(sid)
            assert after.version == was.version + 1
            if was.state == SessionState.ACTIVE:
                # Billed up to the expiry, not to when the sweep noticed.
                assert was.active_since_ms is not None
                assert was.expire_at_ms is not None
                billed = was.duration_ms + max(0, was.expire_at_ms - was.active_since_ms)
                assert after.duration_ms == billed, (after.duration_ms, billed)

    # -- moves ----------------------------------------------------------------------------------

    def _move(self, sid: str, event: SessionEvent, op: Callable[[], Awaitable[Any]]) -> None:
        m = self.model[sid]
        before = self.load(sid)
        expected = TRANSITIONS.get((m.state, event))
        try:
            result = self.run(op())
        except FailedPrecondition:
            assert expected is None, f"{event.value} refused from {m.state.value}"
            after = self.load(sid)
            assert (after.state, after.version) == (before.state, before.version)
            assert after == before, "a refused move changed the session"
            return
        assert expected is not None, f"{event.value} accepted from {m.state.value}"
        after = self.load(sid)
        assert result.state == after.state == expected
        if event == SessionEvent.UPDATE:
            assert after.version == before.version + 1  # the fields changed, not the state
        elif expected == m.state:
            assert after == before, f"the no-op {event.value} from {m.state.value} wrote"
        else:
            assert after.version == before.version + 1
        if expected.ended and not m.state.ended:
            m.end_reason = _end_reason(m.state, event)
        if expected == SessionState.ACTIVE:
            m.entered_active = True
        m.state = expected

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def every_session_is_as_modelled(self) -> None:
        rows = self._rows()
        for sid, m in self.model.items():
            s = self.load(sid)
            assert s.state in SessionState
            assert s.state == m.state, (sid, s.state, m.state)
            row = rows[sid]
            assert (s.state.value, s.version, s.duration_ms) == row, ("cache vs file", sid)

            used = s.duration_at(self.now)
            assert s.duration_ms >= 0
            assert used >= 0
            assert used >= m.duration_ms, f"usage went down: {m.duration_ms} -> {used}"
            m.duration_ms = used
            usage = self.run(
                self.manager.usage(self.key, start_ms=0, end_ms=self.now + 1, session_id=sid)
            )
            assert sum(u.duration_ms for u in usage) == used, (usage, used)

            ended = s.state.ended
            assert (s.end_reason is not None) == ended
            assert (s.end_ms is not None) == ended
            if ended:
                assert s.end_reason == m.end_reason
            assert (s.start_ms is not None) == m.entered_active
            if m.start_ms is not None:
                assert s.start_ms == m.start_ms, "start_time changed"
            m.start_ms = s.start_ms
            assert (s.active_since_ms is not None) == (s.state == SessionState.ACTIVE)

    def _rows(self) -> dict[str, tuple[str, int, int]]:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            return {
                sid: (state, version, duration)
                for sid, state, version, duration in conn.execute(
                    "SELECT id, state, version, duration_ms FROM sessions"
                )
            }
        finally:
            conn.close()


def _end_reason(source: SessionState, event: SessionEvent) -> EndReason:
    if event == SessionEvent.TERMINATE:
        return EndReason.TERMINATED
    # EXPIRE with no reason given: only max_duration runs out while ACTIVE.
    return EndReason.MAX_DURATION if source == SessionState.ACTIVE else EndReason.RESUME_WINDOW


TestLifecycle = LifecycleMachine.TestCase
TestLifecycle.settings = fuzz_settings("lifecycle")
