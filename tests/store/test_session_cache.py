"""The repository's session cache never serves what the database does not hold.

Every write path of the repository runs with the cache on (forced on for PostgreSQL too, where it
is off by default) and afterwards the cached copy must equal the stored row, token hash included,
or be absent. Reads that fill the cache while a write lands must not put the older row back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from parleyd.domain.errors import FailedPrecondition, NotFound
from parleyd.domain.ids import new_access_token, secret_hash
from parleyd.domain.lifecycle import EndReason, SessionEvent, SessionState
from parleyd.domain.session import (
    AgentMode,
    ApiKey,
    ConnectionType,
    MessageRole,
    SceneItem,
    Session,
    SessionSpec,
)
from parleyd.store import Database, Repository
from parleyd.store.cache import SessionCache
from tests.support.sqlite import closing, sqlite_write_lock, writes_at_the_writer, writes_gathered
from tests.support.store import MAX_MS, T0, create, new_id, new_session
from tests.support.waiting import wait_until


@pytest.fixture
async def repo(db: Database) -> Repository:
    return Repository(db, session_cache=True)


def cache_of(repo: Repository) -> SessionCache:
    assert repo.session_cache is not None
    return repo.session_cache


async def settled(repo: Repository) -> None:
    """Waits until no write of the repository is still in flight (hooks have run)."""
    await wait_until(
        lambda: not cache_of(repo)._inflight,
        timeout_s=5,
        what=lambda: f"writes still in flight: {cache_of(repo)._inflight}",
    )


async def assert_consistent(repo: Repository, db: Database, *session_ids: str) -> None:
    """Each cached session equals the stored row (token hash too); reads serve the stored row."""
    await settled(repo)
    plain = Repository(db, session_cache=False)
    for sid in list(cache_of(repo)._entries):  # nothing is cached that was never stored
        await plain.get_session(sid)
    for sid in session_ids:
        entry = cache_of(repo).peek(sid)
        try:
            stored: Session | None = await plain.get_session(sid)
        except NotFound:
            stored = None
        if entry is not None:
            assert stored is not None, f"{sid} is cached but not stored"
            assert entry[0] == stored
            assert await plain.get_session_by_token_hash(sid, entry[1]) == stored
        if stored is not None:
            assert await repo.get_session(sid) == stored


class _DatabaseProxy:
    """The database, except for what a subclass overrides."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


# -- create ---------------------------------------------------------------------------------------


async def test_create_caches_exactly_the_stored_row(
    repo: Repository, db: Database, key: ApiKey
) -> None:
    specs = [
        SessionSpec(agent_id="npc"),
        SessionSpec(
            agent_id="npc",
            user_id="player",
            profile="p",
            avatar_id="av",
            connection_type=ConnectionType.VIDEO,
            speaker_id="sp",
            situation="A {{ place }}",
            dynamic_info="raining",
            scene=[SceneItem("door", "oak"), SceneItem("lamp", "")],
            metadata={"a": "1", "b": "2"},
            continue_from_session_id="",
            render_templates=True,
            agent_mode=AgentMode.EXTERNAL,
        ),
    ]
    made = [await new_session(repo, key, spec=spec) for spec in specs]
    for s in made:
        assert cache_of(repo).peek(s.id) is not None
    await assert_consistent(repo, db, *(s.id for s in made))


async def test_create_replays_and_races_on_request_id(
    repo: Repository, db: Database, key: ApiKey
) -> None:
    first = await create(repo, key, request_id="r1")
    again = await create(repo, key, SessionSpec(agent_id="other"), request_id="r1")
    assert not again.created
    raced = await asyncio.gather(*(create(repo, key, request_id="r2") for _ in range(10)))
    assert sum(o.created for o in raced) == 1
    await assert_consistent(repo, db, first.session.id, again.session.id)
    await assert_consistent(repo, db, *{o.session.id for o in raced})


async def test_failed_create_caches_nothing(repo: Repository, db: Database) -> None:
    ghost = ApiKey(id="key_ghost", name="ghost", max_session_duration_ms=1, create_ms=T0)
    sid = new_id()
    with pytest.raises(sa.exc.IntegrityError):
        await create(repo, ghost, session_id=sid)
    assert cache_of(repo).peek(sid) is None
    await assert_consistent(repo, db, sid)


async def test_create_continuing_a_session(repo: Repository, db: Database, key: ApiKey) -> None:
    parent = await new_session(repo, key)
    await repo.append_message(
        parent.id, role=MessageRole.USER, text="hi", interaction_id="", now_ms=T0 + 1
    )
    child = await new_session(
        repo, key, spec=SessionSpec(agent_id="npc", continue_from_session_id=parent.id)
    )
    await assert_consistent(repo, db, parent.id, child.id)
    with pytest.raises(NotFound):
        await create(repo, key, SessionSpec(agent_id="npc", continue_from_session_id=new_id()))


# -- update ---------------------------------------------------------------------------------------


async def test_update_paths(repo: Repository, db: Database, key: ApiKey) -> None:
    s = await new_session(repo, key, spec=SessionSpec(agent_id="npc", metadata={"m": "old"}))
    updated = await repo.update_session(
        s, {"dynamic_info": "new", "metadata": {"m": "new"}}, now_ms=T0 + 10
    )
    assert updated is not None
    await assert_consistent(repo, db, s.id)
    # Compare-and-set miss: the stale copy changes nothing, cached or stored.
    assert await repo.update_session(s, {"dynamic_info": "stale"}, now_ms=T0 + 20) is None
    await assert_consistent(repo, db, s.id)
    assert (await repo.get_session(s.id)).dynamic_info == "new"
    # Concurrent updates from the same version: one wins, the cache shows the winner.
    results = await asyncio.gather(
        *(
            repo.update_session(updated, {"dynamic_info": f"v{i}"}, now_ms=T0 + 30 + i)
            for i in range(10)
        )
    )
    assert sum(r is not None for r in results) == 1
    await assert_consistent(repo, db, s.id)


# -- state changes --------------------------------------------------------------------------------


async def test_every_transition_path(repo: Repository, db: Database, key: ApiKey) -> None:
    s = await new_session(repo, key)
    steps: list[tuple[SessionEvent, dict[str, Any]]] = [
        (SessionEvent.UPDATE, {"now_ms": T0 + 500}),  # no-op
        (SessionEvent.JOIN, {"now_ms": T0 + 1_000}),
        (SessionEvent.LEAVE, {"now_ms": T0 + 2_000, "active_until_ms": T0 + 1_800}),
        (SessionEvent.DISCONNECT, {"now_ms": T0 + 2_500}),  # no-op while PAUSED
        (SessionEvent.JOIN, {"now_ms": T0 + 3_000}),
        (SessionEvent.DISCONNECT, {"now_ms": T0 + 4_000, "api_key_id": key.id}),
    ]
    for event, kw in steps:
        await repo.apply_event(s.id, event, **kw)
        await assert_consistent(repo, db, s.id)
    # Refused, not found, not due: each changes nothing.
    with pytest.raises(NotFound):
        await repo.apply_event(s.id, SessionEvent.TERMINATE, now_ms=T0 + 5_000, api_key_id="key_x")
    await assert_consistent(repo, db, s.id)
    with pytest.raises(FailedPrecondition):
        await repo.apply_event(s.id, SessionEvent.EXPIRE, now_ms=T0 + 5_000, only_if_due=True)
    await assert_consistent(repo, db, s.id)
    await repo.apply_event(
        s.id, SessionEvent.TERMINATE, now_ms=T0 + 6_000, end_reason=EndReason.TERMINATED
    )
    await assert_consistent(repo, db, s.id)
    with pytest.raises(FailedPrecondition):
        await repo.apply_event(s.id, SessionEvent.JOIN, now_ms=T0 + 7_000)
    await assert_consistent(repo, db, s.id)
    # The expiry sweep's path: due, re-checked inside the transaction.
    e = await new_session(repo, key)
    await repo.apply_event(e.id, SessionEvent.JOIN, now_ms=T0 + 1_000)
    late = T0 + 1_000 + MAX_MS + 5
    await repo.apply_event(e.id, SessionEvent.EXPIRE, now_ms=late, only_if_due=True)
    await assert_consistent(repo, db, e.id)
    assert (await repo.get_session(e.id)).state == SessionState.EXPIRED


async def test_concurrent_state_changes(repo: Repository, db: Database, key: ApiKey) -> None:
    a, b = await new_session(repo, key), await new_session(repo, key)
    await asyncio.gather(
        *(repo.apply_event(a.id, SessionEvent.JOIN, now_ms=T0 + 1_000) for _ in range(8)),
        *(repo.apply_event(b.id, SessionEvent.TERMINATE, now_ms=T0 + 100 + i) for i in range(20)),
        return_exceptions=True,
    )
    await assert_consistent(repo, db, a.id, b.id)
    await asyncio.gather(
        *(repo.apply_event(a.id, SessionEvent.DISCONNECT, now_ms=T0 + 4_000) for _ in range(10)),
        repo.heartbeat([a.id], T0 + 3_000),
        *(
            repo.append_message(
                a.id, role=MessageRole.USER, text=str(i), interaction_id="", now_ms=T0 + i
            )
            for i in range(5)
        ),
        return_exceptions=True,
    )
    await assert_consistent(repo, db, a.id, b.id)


class _Watched(_DatabaseProxy):
    """The database, counting the writes handed to it and the writes it has committed."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.submitted = 0
        self.committed = 0

    async def write(
        self,
        fn: Callable[[Any], Any],
        on_commit: Callable[[Any], None] | None = None,
        on_fail: Callable[[BaseException], None] | None = None,
    ) -> Any:
        def committed(result: Any) -> None:
            self.committed += 1
            if on_commit is not None:
                on_commit(result)

        self.submitted += 1
        return await self._db.write(fn, committed, on_fail)


# Where the callers give up: before their tasks ever ran; once each task ran its first step;
# once every write was handed to the database; once every write had committed (its hooks ran).
CANCEL_POINTS = ("not started", "first step", "submitted", "committed")


async def test_cancelled_writes_leave_the_cache_true(
    repo: Repository, db: Database, key: ApiKey
) -> None:
    """A caller that gives up mid-write: the write commits or not, the cache follows it."""
    made = [await new_session(repo, key) for _ in range(6)]
    for point in CANCEL_POINTS:
        watched = _Watched(db)
        repo._db = watched  # type: ignore[assignment]
        tasks = [
            asyncio.create_task(repo.apply_event(s.id, SessionEvent.JOIN, now_ms=T0 + 1_000))
            for s in made
        ]
        if point == "first step":
            await asyncio.sleep(0)  # one turn of the loop: no time passes, each task starts
        elif point == "submitted":
            await wait_until(lambda w=watched: w.submitted == len(made), timeout_s=5, what=point)
        elif point == "committed":
            await wait_until(lambda w=watched: w.committed == len(made), timeout_s=5, what=point)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        repo._db = db
        await assert_consistent(repo, db, *(s.id for s in made))
        for s in made:  # back to a joinable state, if the join went through
            if (await repo.get_session(s.id)).state == SessionState.ACTIVE:
                await repo.apply_event(s.id, SessionEvent.DISCONNECT, now_ms=T0 + 2_000)
        await assert_consistent(repo, db, *(s.id for s in made))


# -- reads ----------------------------------------------------------------------------------------


async def test_reads_fill_the_cache_and_check_ownership(db: Database, key: ApiKey) -> None:
    writer = Repository(db, session_cache=False)
    token = new_access_token()
    s = await new_session(writer, key, token=token)
    repo = Repository(db, session_cache=True)
    assert cache_of(repo).peek(s.id) is None
    assert await repo.get_session(s.id, key.id) == s  # a miss: read, then cached
    assert cache_of(repo).peek(s.id) == (s, secret_hash(token))
    with pytest.raises(NotFound):
        await repo.get_session(s.id, "key_other")  # a hit still checks the key
    assert await repo.get_session_by_token_hash(s.id, secret_hash(token)) == s
    assert await repo.get_session_by_token_hash(s.id, secret_hash("wrong")) is None
    unknown = new_id()
    with pytest.raises(NotFound):
        await repo.get_session(unknown)
    assert await repo.get_session_by_token_hash(unknown, secret_hash(token)) is None
    assert cache_of(repo).peek(unknown) is None


async def test_the_cache_is_bounded(db: Database, key: ApiKey) -> None:
    repo = Repository(db, session_cache=True, cache_capacity=3)
    made = [await new_session(repo, key) for _ in range(5)]
    assert len(cache_of(repo)) == 3
    assert [cache_of(repo).peek(s.id) is not None for s in made] == [False, False, True, True, True]
    for s in made:  # evicted ones are read again, and fill the cache again
        assert await repo.get_session(s.id) == s
    await assert_consistent(repo, db, *(s.id for s in made))


class _SlowReads(_DatabaseProxy):
    """The database, except that a read's result is handed back only when `release` is set."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.read_done = asyncio.Event()
        self.release = asyncio.Event()

    async def read(self, fn: Callable[[Any], Any]) -> Any:
        result = await self._db.read(fn)
        self.read_done.set()
        await self.release.wait()
        return result


async def test_a_read_that_raced_a_write_does_not_cache_the_older_row(
    db: Database, key: ApiKey
) -> None:
    repo = Repository(db, session_cache=True, cache_capacity=1)
    s = await new_session(repo, key)
    await new_session(repo, key)  # pushes s out of the one-entry cache
    assert cache_of(repo).peek(s.id) is None
    slow = _SlowReads(db)
    repo._db = slow  # type: ignore[assignment]
    reader = asyncio.create_task(repo.get_session(s.id))
    await asyncio.wait_for(slow.read_done.wait(), 10)  # it holds the row at version 1
    repo._db = db
    terminated, _ = await repo.apply_event(s.id, SessionEvent.TERMINATE, now_ms=T0 + 10)
    assert terminated.version == 2
    await new_session(repo, key)  # pushes version 2 out again: only the read can put s back
    slow.release.set()
    old = await reader
    assert old.version == 1  # a read beside a write may see either version ...
    assert cache_of(repo).peek(s.id) is None  # ... but must not cache the older one
    await assert_consistent(repo, db, s.id)


class _HeldHooks(_DatabaseProxy):
    """The database, except that each write's hooks wait until the test releases them."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.gates: list[asyncio.Event] = []

    async def write(
        self,
        fn: Callable[[Any], Any],
        on_commit: Callable[[Any], None] | None = None,
        on_fail: Callable[[BaseException], None] | None = None,
    ) -> Any:
        gate = asyncio.Event()
        self.gates.append(gate)
        try:
            result = await self._db.write(fn)
        except BaseException as exc:
            await gate.wait()
            if on_fail is not None:
                on_fail(exc)
            raise
        await gate.wait()
        if on_commit is not None:
            on_commit(result)
        return result


async def test_writes_that_finish_out_of_commit_order(db: Database, key: ApiKey) -> None:
    """On PostgreSQL the later of two commits may be reported first: the older row loses."""
    repo = Repository(db, session_cache=True)
    plain = Repository(db, session_cache=False)
    s = await new_session(repo, key)
    held = _HeldHooks(db)
    repo._db = held  # type: ignore[assignment]

    async def stored_version(version: int) -> bool:
        return (await plain.get_session(s.id)).version == version

    # Each write commits (the stored row moves on) while its hooks are held.
    join = asyncio.create_task(repo.apply_event(s.id, SessionEvent.JOIN, now_ms=T0 + 1_000))
    await wait_until(lambda: stored_version(2), timeout_s=5, what="the JOIN committed")
    leave = asyncio.create_task(repo.apply_event(s.id, SessionEvent.LEAVE, now_ms=T0 + 2_000))
    await wait_until(lambda: stored_version(3), timeout_s=5, what="the LEAVE committed")
    held.gates[1].set()  # the LEAVE (version 3) is reported first ...
    await leave
    held.gates[0].set()  # ... then the JOIN (version 2)
    await join
    entry = cache_of(repo).peek(s.id)
    # Two outcomes are true to the database: no entry (what SessionCache does today: a write that
    # ends while another is in flight evicts) or the newer row. Never the older one.
    assert entry is None or entry[0].version == 3
    repo._db = db
    await assert_consistent(repo, db, s.id)


class _LostAck(_DatabaseProxy):
    """The database, except that the next write commits but is reported as failed."""

    async def write(
        self,
        fn: Callable[[Any], Any],
        on_commit: Callable[[Any], None] | None = None,
        on_fail: Callable[[BaseException], None] | None = None,
    ) -> Any:
        await self._db.write(fn)
        exc = ConnectionError("connection lost during COMMIT")
        if on_fail is not None:
            on_fail(exc)
        raise exc


async def test_a_write_of_unknown_outcome_evicts(db: Database, key: ApiKey) -> None:
    repo = Repository(db, session_cache=True)
    s = await new_session(repo, key)
    assert cache_of(repo).peek(s.id) is not None
    repo._db = _LostAck(db)  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        await repo.apply_event(s.id, SessionEvent.TERMINATE, now_ms=T0 + 10)
    repo._db = db
    assert cache_of(repo).peek(s.id) is None
    await assert_consistent(repo, db, s.id)
    assert (await repo.get_session(s.id)).state == SessionState.TERMINATED


async def test_writes_through_the_manager_paths(
    repo: Repository, db: Database, key: ApiKey
) -> None:
    """A few rounds of everything at once on a handful of sessions, then a full comparison."""
    made = [
        await new_session(repo, key, spec=SessionSpec(agent_id="npc", metadata={"k": "v"}))
        for _ in range(4)
    ]
    now = T0 + 10_000
    for round_ in range(3):
        now += 1_000
        current = [await repo.get_session(s.id) for s in made]
        await asyncio.gather(
            *(repo.apply_event(s.id, SessionEvent.JOIN, now_ms=now) for s in made),
            *(repo.update_session(c, {"summary": f"r{round_}"}, now_ms=now) for c in current),
            *(repo.apply_event(s.id, SessionEvent.LEAVE, now_ms=now + 1) for s in made[:2]),
            repo.heartbeat([s.id for s in made], now),
            return_exceptions=True,
        )
        await assert_consistent(repo, db, *(s.id for s in made))


async def test_close_finishes_every_write_already_submitted(sqlite_url: str) -> None:
    """Writes gathered behind a group in flight still commit when the database closes."""
    from parleyd.store import open_database

    db = await open_database(sqlite_url)
    repo = Repository(db)
    k, _ = await repo.create_api_key(name="close", max_session_duration_ms=60_000, now_ms=T0)
    # Another connection holds the write lock: the first group waits at the writer ...
    with sqlite_write_lock(sqlite_url):
        first = asyncio.create_task(create(repo, k))
        await wait_until(lambda: writes_at_the_writer(db), timeout_s=5, what="the first write")
        assert not first.done()
        # ... while the next writes gather behind it; then the database is closed.
        rest = [asyncio.create_task(create(repo, k)) for _ in range(29)]
        await wait_until(lambda: writes_gathered(db) == 29, timeout_s=5, what="29 writes waiting")
        close = asyncio.create_task(db.close())
        await wait_until(lambda: closing(db), timeout_s=5, what="the close begun")
    await asyncio.wait_for(close, 10)
    outcomes = await asyncio.wait_for(asyncio.gather(first, *rest, return_exceptions=True), 10)
    made = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(made) == 30, outcomes
    db = await open_database(sqlite_url)
    try:
        again = Repository(db)
        for o in made:
            assert await again.get_session(o.session.id) == o.session
    finally:
        await db.close()


# -- the byte budget ----------------------------------------------------------------------------


def _session(text_chars: int = 0, **kw: Any) -> Session:
    """A session (not stored) whose situation and rendering hold `text_chars` characters each."""
    fields: dict[str, Any] = {
        "id": new_id(),
        "api_key_id": "key_1",
        "agent_id": "npc",
        "user_id": "u",
        "profile": "",
        "avatar_id": "",
        "connection_type": ConnectionType.AUDIO,
        "speaker_id": "",
        "situation": "s" * text_chars,
        "rendered_situation": "r" * text_chars,
        "dynamic_info": "",
        "scene": [],
        "metadata": {},
        "max_duration_ms": MAX_MS,
        "resume_window_ms": 60_000,
        "continue_from_session_id": "",
        "render_templates": False,
        "state": SessionState.CREATED,
        "version": 1,
        "create_ms": T0,
        "update_ms": T0,
        "start_ms": None,
        "end_ms": None,
        "expire_at_ms": None,
        "duration_ms": 0,
        "active_since_ms": None,
        "summary": "",
        "end_reason": None,
        "agent_mode": AgentMode.BUILTIN,
    }
    fields.update(kw)
    return Session(**fields)


def _written(cache: SessionCache, session: Session) -> None:
    """A committed write of `session`, as the repository reports it."""
    cache.write_started(session.id)
    cache.write_committed(session.id, (session, "hash"))


def _held_bytes(cache: SessionCache) -> int:
    from parleyd.store.cache import entry_size

    return sum(entry_size(cache.peek(sid) or (_session(), "")) for sid in list(cache._entries))


def test_entry_size_follows_the_text_fields() -> None:
    from parleyd.store.cache import entry_size

    small = entry_size((_session(), "hash"))
    assert small < 4_096
    big = entry_size((_session(100_000), "hash"))
    assert big - small >= 200_000  # situation and rendering, 100,000 characters each
    # Four-byte characters take four bytes each in memory.
    wide = entry_size((_session(0, situation="\U0001f600" * 10_000), "hash"))
    assert wide - small >= 40_000
    dressed = _session(
        scene=[SceneItem("n" * 100, "d" * 1_000) for _ in range(64)],
        metadata={f"k{i}": "v" * 500 for i in range(64)},
        dynamic_info="i" * 4_000,
    )
    assert entry_size((dressed, "hash")) - small >= 64 * 1_100 + 64 * 500 + 4_000


def test_the_byte_budget_evicts_the_least_recently_used() -> None:
    from parleyd.store.cache import entry_size

    one = entry_size((_session(50_000), "hash"))
    cache = SessionCache(capacity=1_000, max_bytes=3 * one + 100)
    made = [_session(50_000) for _ in range(5)]
    for s in made:
        _written(cache, s)
    assert [cache.peek(s.id) is not None for s in made] == [False, False, True, True, True]
    assert cache.size_bytes == _held_bytes(cache) <= 3 * one + 100
    # A read makes an entry the most recently used: the next one in pushes out another.
    assert cache.get(made[2].id) is not None
    _written(cache, _session(50_000))
    assert cache.peek(made[2].id) is not None
    assert cache.peek(made[3].id) is None
    # Small sessions fit by the hundred where three large ones did.
    for _ in range(500):
        _written(cache, _session())
    assert len(cache) >= 100
    assert cache.size_bytes == _held_bytes(cache) <= 3 * one + 100


def test_the_count_limit_still_holds() -> None:
    cache = SessionCache(capacity=3)
    for _ in range(5):
        _written(cache, _session())
    assert len(cache) == 3


def test_replacing_and_dropping_entries_keeps_the_byte_count() -> None:
    cache = SessionCache(capacity=10, max_bytes=10_000_000)
    s = _session(1_000)
    _written(cache, s)
    before = cache.size_bytes
    from dataclasses import replace

    grown = replace(s, version=2, rendered_situation="r" * 200_000)
    _written(cache, grown)
    assert cache.size_bytes > before + 190_000
    assert cache.size_bytes == _held_bytes(cache)
    cache.write_started(s.id)
    cache.write_failed(s.id)  # an outcome nobody knows: the entry goes
    assert cache.peek(s.id) is None
    assert cache.size_bytes == 0


def test_a_session_larger_than_the_whole_budget_is_not_cached() -> None:
    cache = SessionCache(capacity=10, max_bytes=100_000)
    kept = _session()
    _written(cache, kept)
    huge = _session(60_000)  # situation and rendering: 120 KB
    _written(cache, huge)
    assert cache.peek(huge.id) is None
    assert cache.peek(kept.id) is not None  # and it did not push everything else out
    from dataclasses import replace

    small_again = replace(huge, version=2, situation="", rendered_situation="")
    _written(cache, small_again)
    assert cache.peek(huge.id) == (small_again, "hash")
    _written(cache, replace(small_again, version=3, situation="s" * 120_000))
    assert cache.peek(huge.id) is None  # an older copy is never left behind
    assert cache.size_bytes == _held_bytes(cache)


def test_random_traffic_never_exceeds_the_budget() -> None:
    import random

    rng = random.Random(11)
    cache = SessionCache(capacity=50, max_bytes=2_000_000)
    ids: list[str] = []
    for _ in range(2_000):
        op = rng.random()
        if op < 0.6 or not ids:
            s = _session(rng.choice([0, 100, 10_000, 300_000]))
            ids.append(s.id)
            _written(cache, s)
        elif op < 0.8:
            sid = rng.choice(ids)
            cache.write_started(sid)
            cache.write_failed(sid)
        else:
            cache.get(rng.choice(ids))
        assert cache.size_bytes == _held_bytes(cache) <= 2_000_000
        assert len(cache) <= 50


def test_the_repository_cache_has_the_default_budget(repo: Repository) -> None:
    from parleyd.store.cache import MAX_BYTES

    assert MAX_BYTES == 64 * 1024 * 1024
    assert cache_of(repo)._max_bytes == MAX_BYTES
