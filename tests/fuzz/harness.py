"""A live server for the fuzzers, and the checks every fuzz example ends with.

The server runs on its own event loop in a thread of its own, and the fuzzing client on another
loop (an `asyncio.Runner` in the test's thread). So a server that blocks its loop cannot stop the
client's deadlines from firing: "every call ends within its deadline" stays checkable, and a hang
is a failed example instead of a hung suite. Hypothesis drives plain (sync) test functions; no
pytest-asyncio loop is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sqlite3
import threading
from collections.abc import Awaitable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
from parley.v1 import session_service_pb2

from parleyd.domain.lifecycle import EndReason, SessionState
from tests.support.server import Running, start_server

T = TypeVar("T")

SERVICE = session_service_pb2.DESCRIPTOR.services_by_name["SessionService"]
SERVICE_PATH = f"/{SERVICE.full_name}"

# Logger names whose ERROR records mean the server hit a bug: parleyd's own, grpc's (an exception
# that escaped a handler), and asyncio's ("Task exception was never retrieved").
_WATCHED_LOGGERS = ("parleyd", "grpc", "asyncio")

STATES = frozenset(s.value for s in SessionState)
ENDED = frozenset(s.value for s in SessionState if s.ended)
END_REASONS = frozenset(r.value for r in EndReason)


class LiveServer:
    """A started in-process server (its own thread and loop) and a client loop to call it from."""

    def __init__(self, database_url: str, db_path: Path, **overrides: Any) -> None:
        self.db_path = db_path
        self._loop = asyncio.new_event_loop()
        # A daemon: a server that cannot be stopped must not keep pytest from exiting.
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fuzz-server", daemon=True
        )
        self._thread.start()
        try:
            self.running: Running = self.on_server(start_server(database_url, **overrides), 60)
        except BaseException:
            self._stop_loop()
            raise
        self.api_key = self.running.api_key
        self.client = asyncio.Runner()
        self.channel: grpc.aio.Channel = self.run(self._open_channel())

    async def _open_channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.running.target)

    def on_server(self, work: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Runs `work` on the server's loop (seeding data through its manager or repository)."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)

    def run(self, work: Awaitable[T]) -> T:
        """Runs client code on the client loop."""
        return self.client.run(_awaited(work))

    def md(self, key: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", self.api_key if key is None else key),)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.channel.close())
        self.client.close()
        try:
            self.on_server(self.running.close(), 30)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        if not self._thread.is_alive():
            self._loop.close()


async def _awaited(work: Awaitable[T]) -> T:
    return await work


@contextlib.contextmanager
def live_server(directory: Path, **overrides: Any) -> Iterator[LiveServer]:
    db_path = directory / "parleyd.db"
    server = LiveServer(f"sqlite+aiosqlite:///{db_path}", db_path, **overrides)
    try:
        yield server
    finally:
        server.close()


# Bugs the fuzzers found that src/ does not fix yet, each named after its xfail regression test
# in tests/fuzz/test_regressions.py, with the ERROR record it leaves (logger, text), or None when
# the fuzzer recognises it by what the streams did (test_interact_fuzz.py, `_known_by_streams`).
# An example explained by known findings only is counted (hypothesis `event`) and not failed
# again, so the suite stays green while the fuzzers go on looking for new bugs; an ERROR record
# that is no known finding always fails. PARLEYD_FUZZ_STRICT=1 turns this off (for whoever fixes
# them). Drop an entry together with the xfail mark of its test once the fix is in.
KNOWN_FINDINGS: dict[str, tuple[str, str] | None] = {}


def strict() -> bool:
    return bool(os.environ.get("PARLEYD_FUZZ_STRICT"))


def known_errors(records: list[logging.LogRecord]) -> tuple[set[str], list[str]]:
    """(the known findings behind ERROR records, the ERROR records that are none of them)."""
    known: set[str] = set()
    unknown: list[str] = []
    for text in error_records(records):
        names = {
            name
            for name, sign in KNOWN_FINDINGS.items()
            if sign is not None and text.startswith(sign[0] + " ") and sign[1] in text
        }
        if names and not strict():
            known |= names
        else:
            unknown.append(text)
    return known, unknown


def error_records(records: list[logging.LogRecord]) -> list[str]:
    """Records at ERROR or above from the watched loggers, rendered for a failure message."""
    out = []
    for r in records:
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in _WATCHED_LOGGERS:
            text = f"{r.name} {r.levelname}: {r.getMessage()}"
            if r.exc_text or r.exc_info:
                text += f" [{r.exc_info[1]!r}]" if r.exc_info else f" [{r.exc_text}]"
            out.append(text)
    return out


def rpc_outcomes(records: list[logging.LogRecord]) -> list[tuple[str, str]]:
    """(method, status code) of every call the server finished, from its call log
    (`parleyd.rpc`, one record per call at INFO: the tests turn it on with caplog.set_level)."""
    return [
        (str(r.rpc_method), str(r.rpc_code))
        for r in records
        if r.name == "parleyd.rpc" and hasattr(r, "rpc_code")
    ]


def database_problems(db_path: Path, *, quiescent: bool = True) -> list[str]:
    """What is inconsistent in the stored sessions, messages and usage (empty when all is well).

    `quiescent`: nothing is live right now, so only ACTIVE sessions may have an open usage
    interval and every ACTIVE one has exactly one.
    """
    problems: list[str] = []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN")  # one snapshot for every query below: the server goes on writing
        rows = conn.execute(
            "SELECT id, state, duration_ms, end_reason, end_ms, start_ms, active_since_ms, version"
            " FROM sessions"
        ).fetchall()
        for sid, state, duration, reason, end_ms, start_ms, since, version in rows:
            where = f"session {sid} ({state})"
            if state not in STATES:
                problems.append(f"{where}: state {state!r} is not a legal value")
            if duration is None or duration < 0:
                problems.append(f"{where}: duration_ms {duration} is negative")
            if (reason is not None) != (state in ENDED):
                problems.append(f"{where}: end_reason {reason!r} is set iff ended: broken")
            if reason is not None and reason not in END_REASONS:
                problems.append(f"{where}: end_reason {reason!r} is not a legal value")
            if (end_ms is not None) != (state in ENDED):
                problems.append(f"{where}: end_ms {end_ms!r} is set iff ended: broken")
            if (since is not None) != (state == SessionState.ACTIVE.value):
                problems.append(f"{where}: active_since_ms {since!r} set iff ACTIVE: broken")
            if state == SessionState.ACTIVE.value and start_ms is None:
                problems.append(f"{where}: ACTIVE but start_ms is unset")
            if duration and start_ms is None:
                problems.append(f"{where}: {duration} ms of use but start_ms is unset")
            if version is None or version < 1:
                problems.append(f"{where}: version {version!r}")
        states = {sid: state for sid, state, *_ in rows}

        indexes: dict[str, list[int]] = {}
        for sid, idx in conn.execute("SELECT session_id, idx FROM messages ORDER BY rowid"):
            indexes.setdefault(sid, []).append(idx)
        for sid, seen in indexes.items():
            if sid not in states:
                problems.append(f"messages of unknown session {sid}")
            if any(b <= a for a, b in itertools.pairwise(seen)):
                problems.append(f"session {sid}: message indexes not strictly increasing: {seen}")
            if sorted(seen) != list(range(1, len(seen) + 1)):
                problems.append(f"session {sid}: message indexes are not 1..{len(seen)}: {seen}")

        open_counts: dict[str, int] = {}
        for sid, start, end, is_open in conn.execute(
            "SELECT session_id, start_ms, end_ms, is_open FROM usage_intervals"
        ):
            if end < start:
                problems.append(f"session {sid}: usage interval ends before it starts")
            if is_open:
                open_counts[sid] = open_counts.get(sid, 0) + 1
            if is_open and states.get(sid, SessionState.ACTIVE.value) != SessionState.ACTIVE.value:
                problems.append(f"session {sid} ({states[sid]}): an open usage interval")
        if quiescent:
            for sid, state in states.items():
                if state == SessionState.ACTIVE.value and open_counts.get(sid, 0) != 1:
                    problems.append(f"session {sid}: ACTIVE with {open_counts.get(sid, 0)} open")
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    return problems
