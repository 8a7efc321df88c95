"""The repository on real databases: every test runs on a fresh SQLite file and on PostgreSQL.

Time is explicit (`now_ms`), so durations and expiry are exact. The PostgreSQL database is shared
by the whole test run, so each test works under an API key of its own (a key sees only its own
sessions) and asserts only about rows it made.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable

import pytest
import sqlalchemy as sa

from parleyd.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from parleyd.domain.ids import new_access_token, secret_hash
from parleyd.domain.lifecycle import EndReason, SessionEvent, SessionState, Transition
from parleyd.domain.session import (
    ApiKey,
    ConnectionType,
    MessageRole,
    SceneItem,
    Session,
    SessionSpec,
)
from parleyd.store import Database, Repository
from parleyd.store.repository import SessionFilter
from tests.support.store import MAX_MS, T0, WINDOW_MS, create, new_id, new_session


@pytest.fixture
async def other_key(repo: Repository) -> ApiKey:
    k, _ = await repo.create_api_key(
        name=f"other-{secrets.token_hex(3)}", max_session_duration_ms=3_600_000, now_ms=T0
    )
    return k


async def count(db: Database, sql: str, **params: object) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(sa.text(sql), params)).scalar_one())


def ids(sessions: Iterable[Session]) -> list[str]:
    return [s.id for s in sessions]


# -- API keys -------------------------------------------------------------------------------------


async def test_api_key_create_find_revoke(repo: Repository, db: Database) -> None:
    before = await repo.count_api_keys()
    key, plaintext = await repo.create_api_key(
        name="backend", max_session_duration_ms=1_800_000, now_ms=T0 + 5
    )
    assert plaintext.startswith("pk_")
    assert key.id.startswith("key_")
    assert await repo.count_api_keys() == before + 1

    found = await repo.find_api_key(plaintext)
    assert found == key
    assert found is not None
    assert (found.name, found.max_session_duration_ms, found.create_ms) == (
        "backend",
        1_800_000,
        T0 + 5,
    )
    assert not found.revoked
    assert await repo.find_api_key(plaintext + "x") is None
    assert await repo.find_api_key("") is None

    # Only the hash is stored.
    assert await count(db, "SELECT count(*) FROM api_keys WHERE key_hash = :p", p=plaintext) == 0
    assert (
        await count(
            db, "SELECT count(*) FROM api_keys WHERE key_hash = :h", h=secret_hash(plaintext)
        )
        == 1
    )

    assert await repo.revoke_api_key(key.id) is True
    assert await repo.find_api_key(plaintext) is None
    listed = {k.id: k for k in await repo.list_api_keys()}
    assert listed[key.id].revoked
    assert await repo.revoke_api_key("key_doesnotexist") is False


async def test_api_keys_are_distinct(repo: Repository) -> None:
    a, pa = await repo.create_api_key(name="a", max_session_duration_ms=1, now_ms=T0)
    b, pb = await repo.create_api_key(name="b", max_session_duration_ms=1, now_ms=T0)
    assert a.id != b.id
    assert pa != pb
    assert (await repo.find_api_key(pa)) == a
    assert (await repo.find_api_key(pb)) == b


# -- create and get -------------------------------------------------------------------------------


async def test_create_then_get_round_trips_every_field(repo: Repository, key: ApiKey) -> None:
    spec = SessionSpec(
        agent_id="innkeeper",
        user_id="user-7",
        profile="gruff",
        avatar_id="av-1",
        connection_type=ConnectionType.VIDEO,
        speaker_id="spk-2",
        situation="A rainy night. Ünïcode ✓",
        dynamic_info="The door creaks.",
        scene=[SceneItem("lamp", "flickers"), SceneItem("door")],
        metadata={"user_name": "Ann", "tier": "gold"},
        render_templates=True,
    )
    sid = new_id()
    outcome = await create(repo, key, spec, session_id=sid, now_ms=T0 + 10)
    assert outcome.created
    got = await repo.get_session(sid, key.id)
    assert got == outcome.session
    assert got.id == sid
    assert got.api_key_id == key.id
    assert (got.agent_id, got.user_id, got.profile, got.avatar_id, got.speaker_id) == (
        "innkeeper",
        "user-7",
        "gruff",
        "av-1",
        "spk-2",
    )
    assert got.connection_type == ConnectionType.VIDEO
    assert got.situation == "A rainy night. Ünïcode ✓"
    assert got.rendered_situation == "A RAINY NIGHT. ÜNÏCODE ✓"
    assert got.dynamic_info == "The door creaks."
    assert got.scene == [SceneItem("lamp", "flickers"), SceneItem("door", "")]
    assert got.metadata == {"user_name": "Ann", "tier": "gold"}
    assert got.render_templates is True
    assert got.state == SessionState.CREATED
    assert got.version == 1
    assert got.create_ms == got.update_ms == T0 + 10
    assert got.start_ms is None
    assert got.end_ms is None
    assert got.end_reason is None
    assert got.expire_at_ms == T0 + 10 + WINDOW_MS
    assert got.duration_ms == 0
    assert got.active_since_ms is None
    assert (got.max_duration_ms, got.resume_window_ms) == (MAX_MS, WINDOW_MS)
    # Without a key restriction (the live side, which holds the access token) it is found too.
    assert await repo.get_session(sid) == got


async def test_get_refuses_other_keys_and_unknown_ids(
    repo: Repository, key: ApiKey, other_key: ApiKey
) -> None:
    s = await new_session(repo, key)
    with pytest.raises(NotFound):
        await repo.get_session(s.id, other_key.id)
    with pytest.raises(NotFound):
        await repo.get_session(new_id(), key.id)
    with pytest.raises(NotFound):
        await repo.get_session(new_id())


async def test_get_by_token_hash(repo: Repository, key: ApiKey) -> None:
    token = new_access_token()
    a = await new_session(repo, key, token=token)
    b = await new_session(repo, key)
    assert (await repo.get_session_by_token_hash(a.id, secret_hash(token))) == a
    assert await repo.get_session_by_token_hash(a.id, secret_hash(token + "x")) is None
    # A token opens only its own session.
    assert await repo.get_session_by_token_hash(b.id, secret_hash(token)) is None


async def test_create_with_unknown_api_key_fails(repo: Repository) -> None:
    ghost = ApiKey(id="key_ghost", name="ghost", max_session_duration_ms=1, create_ms=T0)
    with pytest.raises(sa.exc.IntegrityError):
        await create(repo, ghost)


# -- idempotent create ----------------------------------------------------------------------------


async def test_same_request_id_returns_the_first_session(
    repo: Repository, key: ApiKey, db: Database
) -> None:
    first = await create(repo, key, request_id="req-1", now_ms=T0)
    again = await create(
        repo, key, SessionSpec(agent_id="someone-else"), request_id="req-1", now_ms=T0 + 999
    )
    assert first.created
    assert not again.created
    assert again.session.id == first.session.id
    assert again.session.agent_id == "npc"  # the stored one, not the retry's body
    assert again.session.create_ms == T0
    assert again.request_fingerprint == "fp-req-1"
    assert again.token_sealed == first.token_sealed == "ab" * 40
    n = await count(
        db,
        "SELECT count(*) FROM sessions WHERE api_key_id = :k AND request_id = :r",
        k=key.id,
        r="req-1",
    )
    assert n == 1


async def test_request_ids_are_per_key(repo: Repository, key: ApiKey, other_key: ApiKey) -> None:
    a = await create(repo, key, request_id="shared")
    b = await create(repo, other_key, request_id="shared")
    assert a.created
    assert b.created
    assert a.session.id != b.session.id
    assert b.session.api_key_id == other_key.id


async def test_without_request_id_every_create_is_new(repo: Repository, key: ApiKey) -> None:
    outcomes = await asyncio.gather(*(create(repo, key) for _ in range(5)))
    assert all(o.created for o in outcomes)
    assert len({o.session.id for o in outcomes}) == 5


async def test_concurrent_creates_with_one_request_id_make_one_row(
    repo: Repository, key: ApiKey, db: Database
) -> None:
    outcomes = await asyncio.gather(*(create(repo, key, request_id="race") for _ in range(10)))
    assert sum(o.created for o in outcomes) == 1
    assert len({o.session.id for o in outcomes}) == 1
    n = await count(
        db,
        "SELECT count(*) FROM sessions WHERE api_key_id = :k AND request_id = 'race'",
        k=key.id,
    )
    assert n == 1
    assert await count(db, "SELECT count(*) FROM sessions WHERE api_key_id = :k", k=key.id) == 1


# -- listing --------------------------------------------------------------------------------------


async def test_list_is_newest_first_and_scoped_to_the_key(
    repo: Repository, key: ApiKey, other_key: ApiKey
) -> None:
    made = [await new_session(repo, key) for _ in range(4)]
    await new_session(repo, other_key)
    listed = await repo.list_sessions(key.id, SessionFilter(), before_id=None, limit=100)
    assert ids(listed) == ids(reversed(made))
    assert ids(await repo.list_sessions(key.id, SessionFilter(), before_id=None, limit=2)) == [
        made[3].id,
        made[2].id,
    ]


async def test_keyset_paging_is_stable_while_sessions_are_added(
    repo: Repository, key: ApiKey
) -> None:
    existing = [await new_session(repo, key) for _ in range(8)]
    seen: list[str] = []
    added: list[str] = []
    cursor: str | None = None
    while True:
        page = await repo.list_sessions(key.id, SessionFilter(), before_id=cursor, limit=3)
        seen.extend(ids(page))
        if len(page) < 3:
            break
        cursor = page[-1].id
        # New sessions arrive between pages; they are newer than every cursor.
        added.append((await new_session(repo, key)).id)
    assert len(seen) == len(set(seen)), "a session was listed twice"
    assert seen == ids(reversed(existing)), "pre-existing sessions were skipped or reordered"
    assert not set(added) & set(seen)
    # A fresh listing shows everything, newest first.
    everything = await repo.list_sessions(key.id, SessionFilter(), before_id=None, limit=100)
    assert ids(everything) == list(reversed(ids(existing) + added))


async def test_filters(repo: Repository, key: ApiKey) -> None:
    a = await new_session(
        repo, key, spec=SessionSpec(agent_id="npc", user_id="u1", metadata={"a": "1", "b": "2"})
    )
    b = await new_session(
        repo, key, spec=SessionSpec(agent_id="npc", user_id="u2", metadata={"a": "1"})
    )
    c = await new_session(
        repo, key, spec=SessionSpec(agent_id="bard", user_id="u1", metadata={"a": "2", "b": "2"})
    )
    await repo.apply_event(c.id, SessionEvent.TERMINATE, now_ms=T0 + 1)

    async def listed(**kw: object) -> set[str]:
        flt = SessionFilter(**kw)  # type: ignore[arg-type]
        return set(ids(await repo.list_sessions(key.id, flt, before_id=None, limit=100)))

    assert await listed() == {a.id, b.id, c.id}
    assert await listed(state=SessionState.CREATED) == {a.id, b.id}
    assert await listed(state=SessionState.TERMINATED) == {c.id}
    assert await listed(state=SessionState.ACTIVE) == set()
    assert await listed(agent_id="npc") == {a.id, b.id}
    assert await listed(agent_id="nobody") == set()
    assert await listed(user_id="u1") == {a.id, c.id}
    assert await listed(agent_id="npc", user_id="u1") == {a.id}
    assert await listed(metadata={"a": "1"}) == {a.id, b.id}
    assert await listed(metadata={"b": "2"}) == {a.id, c.id}
    # Every pair must match.
    assert await listed(metadata={"a": "1", "b": "2"}) == {a.id}
    assert await listed(metadata={"a": "1", "b": "3"}) == set()
    assert await listed(metadata={"a": "1", "zzz": "1"}) == set()
    assert await listed(metadata={"a": "2"}, state=SessionState.CREATED) == set()
    assert await listed(metadata={}) == {a.id, b.id, c.id}


async def test_filtered_paging(repo: Repository, key: ApiKey) -> None:
    tagged = []
    for i in range(7):
        s = await new_session(
            repo, key, spec=SessionSpec(agent_id="npc", metadata={"tag": "x" if i % 2 else "y"})
        )
        if i % 2:
            tagged.append(s.id)
    flt = SessionFilter(metadata={"tag": "x"})
    first = await repo.list_sessions(key.id, flt, before_id=None, limit=2)
    second = await repo.list_sessions(key.id, flt, before_id=first[-1].id, limit=2)
    assert ids(first) + ids(second) == list(reversed(tagged))[:4]


# -- updates --------------------------------------------------------------------------------------


async def test_update_is_compare_and_set_on_version(repo: Repository, key: ApiKey) -> None:
    s = await new_session(repo, key, spec=SessionSpec(agent_id="npc", metadata={"m": "old"}))
    updated = await repo.update_session(
        s, {"profile": "calm", "metadata": {"m": "new", "n": "1"}}, now_ms=T0 + 50
    )
    assert updated is not None
    assert updated.profile == "calm"
    assert updated.metadata == {"m": "new", "n": "1"}
    assert updated.version == 2
    assert updated.update_ms == T0 + 50
    # A writer still holding the old version loses and changes nothing.
    assert await repo.update_session(s, {"profile": "stale"}, now_ms=T0 + 60) is None
    assert (await repo.get_session(s.id)).profile == "calm"
    # Metadata filters follow the new labels.
    flt_old = SessionFilter(metadata={"m": "old"})
    flt_new = SessionFilter(metadata={"m": "new", "n": "1"})
    assert await repo.list_sessions(key.id, flt_old, before_id=None, limit=10) == []
    assert ids(await repo.list_sessions(key.id, flt_new, before_id=None, limit=10)) == [s.id]
    cleared = await repo.update_session(updated, {"metadata": {}}, now_ms=T0 + 70)
    assert cleared is not None
    assert cleared.metadata == {}
    assert await repo.list_sessions(key.id, flt_new, before_id=None, limit=10) == []


# -- state changes --------------------------------------------------------------------------------


async def test_twenty_concurrent_terminates_take_effect_once(repo: Repository, key: ApiKey) -> None:
    s = await new_session(repo, key)
    results = await asyncio.gather(
        *(
            repo.apply_event(s.id, SessionEvent.TERMINATE, now_ms=T0 + 100 + i, api_key_id=key.id)
            for i in range(20)
        ),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, tuple)]
    refusals = [r for r in results if isinstance(r, FailedPrecondition)]
    assert len(wins) == 1, results
    assert len(refusals) == 19, results
    assert all("TERMINATED" in r.message for r in refusals)
    final = await repo.get_session(s.id)
    assert final.state == SessionState.TERMINATED
    assert final.version == 2
    assert final.end_reason == EndReason.TERMINATED
    assert final.end_ms == wins[0][0].end_ms
    assert final.expire_at_ms is None


async def test_concurrent_disconnects_of_an_active_session_pause_it_once(
    repo: Repository, key: ApiKey, db: Database
) -> None:
    s = await new_session(repo, key)
    joined, _ = await repo.apply_event(s.id, SessionEvent.JOIN, now_ms=T0 + 1_000)
    assert joined.version == 2
    results = await asyncio.gather(
        *(repo.apply_event(s.id, SessionEvent.DISCONNECT, now_ms=T0 + 4_000) for _ in range(10))
    )
    steps: list[Transition] = [step for _, step in results]
    real = [st for st in steps if not st.noop]
    assert len(real) == 1
    assert (real[0].source, real[0].target) == (SessionState.ACTIVE, SessionState.PAUSED)
    assert all(st.source == SessionState.PAUSED for st in steps if st.noop)
    final = await repo.get_session(s.id)
    assert final.state == SessionState.PAUSED
    assert final.version == 3
    assert final.duration_ms == 3_000
    # One ACTIVE interval, closed once.
    n = await count(db, "SELECT count(*) FROM usage_intervals WHERE session_id = :s", s=s.id)
    assert n == 1
    assert await repo.last_heartbeat_ms(s.id) is None


async def test_concurrent_joins_open_one_interval(
    repo: Repository, key: ApiKey, db: Database
) -> None:
    s = await new_session(repo, key)
    results = await asyncio.gather(
        *(repo.apply_event(s.id, SessionEvent.JOIN, now_ms=T0 + 1_000) for _ in range(8)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, tuple) for r in results) == 1
    assert sum(isinstance(r, FailedPrecondition) for r in results) == 7
    n = await count(db, "SELECT count(*) FROM usage_intervals WHERE session_id = :s", s=s.id)
    assert n == 1
    assert (await repo.get_session(s.id)).version == 2


async def test_refused_event_changes_nothing(repo: Repository, key: ApiKey) -> None:
    s = await new_session(repo, key)
    with pytest.raises(FailedPrecondition, match="CREATED"):
        await repo.apply_event(s.id, SessionEvent.LEAVE, now_ms=T0 + 1)
    assert await repo.get_session(s.id) == s
    ended, _ = await repo.apply_event(s.id, SessionEvent.TERMINATE, now_ms=T0 + 2)
    for event in SessionEvent:
        with pytest.raises(FailedPrecondition, match="TERMINATED"):
            await repo.apply_event(s.id, event, now_ms=T0 + 3)
    assert await repo.get_session(s.id) == ended


async def test_apply_event_respects_the_key(
    repo: Repository, key: ApiKey, other_key: ApiKey
) -> None:
    s = await new_session(repo, key)
    with pytest.raises(NotFound):
        await repo.apply_event(s.id, SessionEvent.TERMINATE, now_ms=T0, api_key_id=other_key.id)
    with pytest.raises(NotFound):
        await repo.apply_event(new_id(), SessionEvent.TERMINATE, now_ms=T0)
    assert (await repo.get_session(s.id)).state == SessionState.CREATED


async def test_noop_event_keeps_the_version(repo: Repository, key: ApiKey) -> None:
    s = await new_session(repo, key)
    await repo.apply_event(s.id, SessionEvent.JOIN, now_ms=T0 + 1)
    paused, _ = await repo.apply_event(s.id, SessionEvent.DISCONNECT, now_ms=T0 + 2)
    again, step = await repo.apply_event(s.id, SessionEvent.DISCONNECT, now_ms=T0 + 3)
    assert step.noop
    assert again == paused
    assert again.update_ms == T0 + 2


# -- usage and time -------------------------------------------------------------------------------


async def test_join_leave_usage(repo: Repository, key: ApiKey) -> None:
    s = await new_session(repo, key, now_ms=T0)
    active, step = await repo.apply_event(s.id, SessionEvent.JOIN, now_ms=T0 + 1_000)
    assert step.enters_active
    assert active.state == SessionState.ACTIVE
    assert active.start_ms == T0 + 1_000
    assert active.active_since_ms == T0 + 1_000
    assert active.expire_at_ms == T0 + 1_000 + MAX_MS
    assert active.duration_at(T0 + 3_500) == 2_500

    await repo.heartbeat([s.id], T0 + 5_000)
    assert await repo.last_heartbeat_ms(s.id) == T0 + 5_000

    paused, step = await repo.apply_event(s.id, SessionEvent.LEAVE, now_ms=T0 + 8_000)
    assert step.leaves_active
    assert paused.state == SessionState.PAUSED
    assert paused.duration_ms == 7_000
    assert paused.active_since_ms is None
    assert paused.expire_at_ms == T0 + 8_000 + WINDOW_MS
    assert paused.duration_at(T0 + 50_000) == 7_000

    again, _ = await repo.apply_event(s.id, SessionEvent.JOIN, now_ms=T0 + 20_000)
    assert again.start_ms == T0 + 1_000  # the first start is kept
    # Only the max_duration still unused remains.
    assert again.expire_at_ms == T0 + 20_000 + MAX_MS - 7_000
    done, _ = await repo.apply_event(s.id, SessionEvent.LEAVE, now_ms=T0 + 23_000)
    assert done.duration_ms == 10_000

    everything = await repo.usage(key.id, start_ms=0, end_ms=T0 + 10**9, now_ms=T0 + 30_000)
    assert [(u.session_id, u.agent_id, u.duration_ms) for u in everything] == [
        (s.id, "npc", 10_000)
    ]
    # Intervals [1000, 8000) and [20000, 23000) clipped to [5000, 21000): 3000 + 1000.
    clipped = await repo.usage(key.id, start_ms=T0 + 5_000, end_ms=T0 + 21_000, now_ms=T0 + 30_000)
    assert [u.duration_ms for u in clipped] == [4_000]
    # A window that touches no interval; [start, end) excludes the end.
    assert await repo.usage(key.id, start_ms=T0 + 8_000, end_ms=T0 + 20_000, now_ms=T0) == []
    assert await repo.usage(key.id, start_ms=0, end_ms=T0 + 1_000, now_ms=T0) == []
    edge = await repo.usage(key.id, start_ms=0, end_ms=T0 + 1_001, now_ms=T0)
    assert [u.duration_ms for u in edge] == [1]


async def test_usage_of_an_open_interval_runs_to_now(repo: Repository, key: ApiKey) -> None:
    s = await new_session(repo, key)
    await repo.apply_event(s.id, SessionEvent.JOIN, now_ms=T0 + 1_000)
    live = await repo.usage(key.id, start_ms=T0, end_ms=T0 + 10**6, now_ms=T0 + 6_000)
    assert [u.duration_ms for u in live] == [5_000]
    clipped = await repo.usage(key.id, start_ms=T0, end_ms=T0 + 4_000, now_ms=T0 + 6_000)
    assert [u.duration_ms for u in clipped] == [3_000]


async def test_usage_per_session_and_ordering(
    repo: Repository, key: ApiKey, other_key: ApiKey
) -> None:
    short = await new_session(repo, key, spec=SessionSpec(agent_id="a"))
    long = await new_session(repo, key, spec=SessionSpec(agent_id="b"))
    foreign = await new_session(repo, other_key)
    for s, stop in ((short, 2_000), (long, 9_000), (foreign, 50_000)):
        await repo.apply_event(s.id, SessionEvent.JOIN, now_ms=T0 + 1_000)
        await repo.apply_event(s.id, SessionEvent.TERMINATE, now_ms=T0 + stop)
    end = T0 + 10**6
    usage = await repo.usage(key.id, start_ms=T0, end_ms=end, now_ms=end)
    assert [(u.session_id, u.agent_id, u.duration_ms) for u in usage] == [
        (long.id, "b", 8_000),
        (short.id, "a", 1_000),
    ]
    one = await repo.usage(key.id, start_ms=T0, end_ms=end, now_ms=end, session_id=short.id)
    assert [(u.session_id, u.duration_ms) for u in one] == [(short.id, 1_000)]
    with pytest.raises(NotFound):
        await repo.usage(key.id, start_ms=T0, end_ms=end, now_ms=end, session_id=foreign.id)


async def test_crash_recovery_counts_usage_up_to_the_last_heartbeat(
    repo: Repository, key: ApiKey
) -> None:
    s = await new_session(repo, key)
    await repo.apply_event(s.id, SessionEvent.JOIN, now_ms=T0 + 1_000)
    await repo.heartbeat([s.id], T0 + 3_000)
    await repo.heartbeat([s.id], T0 + 4_000)
    last = await repo.last_heartbeat_ms(s.id)
    assert last == T0 + 4_000
    # The server died; on restart the session is closed at its last heartbeat, not at "now".
    paused, _ = await repo.apply_event(
        s.id, SessionEvent.LEAVE, now_ms=T0 + 100_000, active_until_ms=last
    )
    assert paused.duration_ms == 3_000
    assert paused.state == SessionState.PAUSED
    assert paused.update_ms == T0 + 100_000
    assert await repo.last_heartbeat_ms(s.id) is None
    usage = await repo.usage(key.id, start_ms=T0, end_ms=T0 + 10**6, now_ms=T0 + 200_000)
    assert [u.duration_ms for u in usage] == [3_000]


async def test_active_until_is_clipped_to_the_interval(repo: Repository, key: ApiKey) -> None:
    later = await new_session(repo, key)
    await repo.apply_event(later.id, SessionEvent.JOIN, now_ms=T0 + 1_000)
    # A bound after now counts only up to now.
    p, _ = await repo.apply_event(
        later.id, SessionEvent.LEAVE, now_ms=T0 + 2_000, active_until_ms=T0 + 9_000
    )
    assert p.duration_ms == 1_000
    earlier = await new_session(repo, key)
    await repo.apply_event(earlier.id, SessionEvent.JOIN, now_ms=T0 + 5_000)
    # A bound before the interval began counts nothing (never negative).
    p, _ = await repo.apply_event(
        earlier.id, SessionEvent.LEAVE, now_ms=T0 + 6_000, active_until_ms=T0 + 1_000
    )
    assert p.duration_ms == 0
    usage = await repo.usage(key.id, start_ms=0, end_ms=T0 + 10**6, now_ms=T0 + 10**6)
    assert {u.session_id: u.duration_ms for u in usage} == {later.id: 1_000}


async def test_heartbeat_extends_only_open_intervals(
    repo: Repository, key: ApiKey, db: Database
) -> None:
    live = await new_session(repo, key)
    paused = await new_session(repo, key)
    for s in (live, paused):
        await repo.apply_event(s.id, SessionEvent.JOIN, now_ms=T0 + 1_000)
    await repo.apply_event(paused.id, SessionEvent.LEAVE, now_ms=T0 + 2_000)
    await repo.heartbeat([live.id, paused.id], T0 + 7_000)
    await repo.heartbeat([], T0 + 9_000)  # nothing to do, must not fail
    ends = {
        sid: await count(db, "SELECT max(end_ms) FROM usage_intervals WHERE session_id = :s", s=sid)
        for sid in (live.id, paused.id)
    }
    assert ends == {live.id: T0 + 7_000, paused.id: T0 + 2_000}
    assert await repo.last_heartbeat_ms(live.id) == T0 + 7_000
    assert await repo.last_heartbeat_ms(paused.id) is None


async def test_expiry(repo: Repository, key: ApiKey) -> None:
    created = await new_session(repo, key, now_ms=T0)
    active = await new_session(repo, key, now_ms=T0)
    paused = await new_session(repo, key, now_ms=T0)
    ended = await new_session(repo, key, now_ms=T0)
    await repo.apply_event(active.id, SessionEvent.JOIN, now_ms=T0 + 10_000)
    await repo.apply_event(paused.id, SessionEvent.JOIN, now_ms=T0 + 10_000)
    await repo.apply_event(paused.id, SessionEvent.LEAVE, now_ms=T0 + 20_000)
    await repo.apply_event(ended.id, SessionEvent.TERMINATE, now_ms=T0 + 1)

    async def due(now_ms: int) -> set[str]:
        mine = {created.id, active.id, paused.id, ended.id}
        return {s.id for s in await repo.sessions_due_to_expire(now_ms, limit=10_000)} & mine

    assert await due(T0 + WINDOW_MS - 1) == set()
    assert await due(T0 + WINDOW_MS) == {created.id}  # the resume window counts from creation
    assert await due(T0 + 20_000 + WINDOW_MS) == {created.id, paused.id}
    assert await due(T0 + 10_000 + MAX_MS) == {created.id, paused.id, active.id}
    assert ended.id not in await due(T0 + 10**9)

    gone, _ = await repo.apply_event(active.id, SessionEvent.EXPIRE, now_ms=T0 + 10_000 + MAX_MS)
    assert gone.state == SessionState.EXPIRED
    assert gone.end_reason == EndReason.MAX_DURATION  # ACTIVE can only run out of max_duration
    assert gone.duration_ms == MAX_MS
    assert gone.expire_at_ms == gone.end_ms == T0 + 10_000 + MAX_MS
    timed_out, _ = await repo.apply_event(
        paused.id, SessionEvent.EXPIRE, now_ms=T0 + 20_000 + WINDOW_MS
    )
    assert timed_out.end_reason == EndReason.RESUME_WINDOW
    assert timed_out.duration_ms == 10_000
    explicit, _ = await repo.apply_event(
        created.id,
        SessionEvent.EXPIRE,
        now_ms=T0 + WINDOW_MS,
        end_reason=EndReason.RESUME_WINDOW,
    )
    assert explicit.end_reason == EndReason.RESUME_WINDOW
    assert await due(T0 + 10**9) == set()
    assert {s.id for s in await repo.sessions_in_state(SessionState.EXPIRED)} >= {
        active.id,
        paused.id,
        created.id,
    }


# -- messages -------------------------------------------------------------------------------------


async def append(repo: Repository, session_id: str, *texts: str, now_ms: int = T0) -> None:
    for i, text in enumerate(texts):
        role = MessageRole.USER if i % 2 == 0 else MessageRole.AGENT
        await repo.append_message(
            session_id, role=role, text=text, interaction_id=f"int-{i}", now_ms=now_ms + i
        )


async def test_messages_are_ordered_and_paged(
    repo: Repository, key: ApiKey, other_key: ApiKey
) -> None:
    s = await new_session(repo, key)
    first = await repo.append_message(
        s.id, role=MessageRole.USER, text="hello", interaction_id="i1", now_ms=T0 + 5
    )
    assert (first.index, first.role, first.text, first.create_ms) == (
        1,
        MessageRole.USER,
        "hello",
        T0 + 5,
    )
    await append(repo, s.id, "b", "c", "d", "e")
    cut = await repo.append_message(
        s.id,
        role=MessageRole.AGENT,
        text="I was say—",
        interaction_id="i9",
        now_ms=T0 + 9,
        interrupted=True,
    )
    assert cut.index == 6
    everything = await repo.list_messages(s.id, key.id, after_index=0, limit=100)
    assert [m.index for m in everything] == [1, 2, 3, 4, 5, 6]
    assert [m.text for m in everything] == ["hello", "b", "c", "d", "e", "I was say—"]
    assert everything[-1].interrupted
    assert not everything[0].interrupted
    assert everything[2].role == MessageRole.AGENT
    assert all(m.inherited_from_session_id == "" for m in everything)

    page1 = await repo.list_messages(s.id, key.id, after_index=0, limit=4)
    page2 = await repo.list_messages(s.id, key.id, after_index=page1[-1].index, limit=4)
    assert [m.index for m in page1] == [1, 2, 3, 4]
    assert [m.index for m in page2] == [5, 6]
    assert await repo.list_messages(s.id, key.id, after_index=6, limit=4) == []

    with pytest.raises(NotFound):
        await repo.list_messages(s.id, other_key.id, after_index=0, limit=10)
    # Histories do not mix.
    other = await new_session(repo, key)
    assert await repo.list_messages(other.id, key.id, after_index=0, limit=10) == []


async def test_append_to_unknown_session_is_not_found(repo: Repository) -> None:
    with pytest.raises(NotFound):
        await repo.append_message(
            new_id(), role=MessageRole.USER, text="hi", interaction_id="", now_ms=T0
        )


async def test_concurrent_appends_get_distinct_indexes(repo: Repository, key: ApiKey) -> None:
    s = await new_session(repo, key)
    made = await asyncio.gather(
        *(
            repo.append_message(
                s.id, role=MessageRole.USER, text=str(i), interaction_id="", now_ms=T0 + i
            )
            for i in range(15)
        )
    )
    assert sorted(m.index for m in made) == list(range(1, 16))
    stored = await repo.list_messages(s.id, key.id, after_index=0, limit=100)
    assert sorted(m.text for m in stored) == sorted(str(i) for i in range(15))


async def test_continue_from_session_copies_history(repo: Repository, key: ApiKey) -> None:
    parent = await new_session(repo, key)
    await append(repo, parent.id, "hi", "hello traveller", "a room please")
    await repo.apply_event(parent.id, SessionEvent.TERMINATE, now_ms=T0 + 10)

    child = await new_session(
        repo, key, spec=SessionSpec(agent_id="npc", continue_from_session_id=parent.id)
    )
    assert child.continue_from_session_id == parent.id
    inherited = await repo.list_messages(child.id, key.id, after_index=0, limit=100)
    assert [(m.index, m.text) for m in inherited] == [
        (1, "hi"),
        (2, "hello traveller"),
        (3, "a room please"),
    ]
    assert all(m.session_id == child.id for m in inherited)
    assert all(m.inherited_from_session_id == parent.id for m in inherited)
    assert [m.role for m in inherited] == [MessageRole.USER, MessageRole.AGENT, MessageRole.USER]
    # The parent's own history is untouched.
    own = await repo.list_messages(parent.id, key.id, after_index=0, limit=100)
    assert all(m.inherited_from_session_id == "" for m in own)

    new = await repo.append_message(
        child.id, role=MessageRole.AGENT, text="welcome back", interaction_id="x", now_ms=T0 + 99
    )
    assert new.index == 4

    # A grandchild keeps where each message really came from.
    grandchild = await new_session(
        repo, key, spec=SessionSpec(agent_id="npc", continue_from_session_id=child.id)
    )
    chain = await repo.list_messages(grandchild.id, key.id, after_index=0, limit=100)
    assert [m.inherited_from_session_id for m in chain] == [parent.id] * 3 + [child.id]
    assert [m.index for m in chain] == [1, 2, 3, 4]


async def test_continue_from_other_agent_is_invalid(
    repo: Repository, key: ApiKey, db: Database
) -> None:
    parent = await new_session(repo, key)
    await append(repo, parent.id, "hi")
    with pytest.raises(InvalidArgument) as info:
        await create(repo, key, SessionSpec(agent_id="bard", continue_from_session_id=parent.id))
    assert [v.field for v in info.value.violations] == ["session.continue_from_session_id"]
    assert "npc" in info.value.message
    assert "bard" in info.value.message
    assert await count(db, "SELECT count(*) FROM sessions WHERE api_key_id = :k", k=key.id) == 1


async def test_continue_from_foreign_or_unknown_session_is_not_found(
    repo: Repository, key: ApiKey, other_key: ApiKey, db: Database
) -> None:
    foreign = await new_session(repo, other_key)
    await append(repo, foreign.id, "secret")
    for parent_id in (foreign.id, new_id()):
        with pytest.raises(NotFound):
            await create(repo, key, SessionSpec(agent_id="npc", continue_from_session_id=parent_id))
    assert await count(db, "SELECT count(*) FROM sessions WHERE api_key_id = :k", k=key.id) == 0
