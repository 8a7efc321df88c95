"""Every SessionService RPC and every lifecycle transition over gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from parley.v1 import message_pb2, session_pb2
from parley.v1 import session_service_pb2 as pb

from parleyd.domain.lifecycle import SessionEvent
from parleyd.domain.session import MessageRole
from tests.grpc import (
    bad_fields,
    join,
    list_all,
    manager,
    ms_of,
    now_ms,
    rpc_error,
    secs,
    ts_ms,
)
from tests.support.server import Running
from tests.support.sessions import (
    create,
    disconnect,
    get_session,
    messages,
    terminate,
)
from tests.support.waiting import wait_until

S = session_pb2
FP = grpc.StatusCode.FAILED_PRECONDITION


async def update(r: Running, paths: list[str], **fields: Any) -> S.Session:
    resp = await r.stub.UpdateSession(
        pb.UpdateSessionRequest(session=S.Session(**fields), update_mask={"paths": paths}),
        metadata=r.md(),
    )
    return resp.session


async def append(
    r: Running, session_id: str, text: str, role: MessageRole = MessageRole.USER
) -> None:
    await r.repo.append_message(
        session_id, role=role, text=text, interaction_id=f"int-{text}", now_ms=now_ms()
    )


# -- CreateSession / GetSession ----------------------------------------------------------------


async def test_create_applies_defaults(running: Running) -> None:
    before = now_ms()
    resp = await create(running)
    s = resp.session
    assert s.id.startswith("sess_")
    assert len(s.id) == 31
    assert s.state == S.SESSION_STATE_CREATED
    assert s.end_reason == S.END_REASON_UNSPECIFIED
    assert s.connection_type == S.CONNECTION_TYPE_AUDIO
    assert ms_of(s.max_duration) == 3_600_000  # the key's limit
    assert ms_of(s.resume_window) == 300_000  # the server's default
    assert before <= ms_of(s.create_time) <= now_ms()
    assert s.update_time == s.create_time
    assert ms_of(s.expire_time) == ms_of(s.create_time) + 300_000
    assert not s.HasField("start_time")
    assert not s.HasField("end_time")
    assert ms_of(s.duration) == 0
    assert resp.access_token.startswith("pat_")
    assert len(resp.access_token) > 20
    assert resp.connect.grpc_target == running.target
    assert resp.connect.webrtc_signaling_url == (
        f"http://127.0.0.1:{running.server.http_port}/v1/sessions/{s.id}/webrtc"
    )

    assert await get_session(running, s.id) == s


async def test_create_max_duration_defaults_to_this_keys_limit(running: Running) -> None:
    small = await running.new_key("small", max_s=600)
    s = (await create(running, key=small)).session
    assert ms_of(s.max_duration) == 600_000
    explicit = (await create(running, key=small, max_duration=secs(90))).session
    assert ms_of(explicit.max_duration) == 90_000


async def test_create_round_trips_every_field(running: Running) -> None:
    fields: dict[str, Any] = {
        "agent_id": "blacksmith-npc",
        "user_id": "player-7",
        "profile": "shopkeeper",
        "avatar_id": "face-3",
        "connection_type": S.CONNECTION_TYPE_VIDEO,
        "speaker_id": "voice-9",
        "situation": "You run a forge in {{ metadata.town }}.",
        "dynamic_info": "the player carries the red key",
        "scene": [S.SceneItem(name="anvil", description="old, cracked")],
        "metadata": {"town": "Ashford", "level": "3"},
        "max_duration": secs(120.5),
        "resume_window": secs(45),
    }
    s = (await create(running, **fields)).session
    got = await get_session(running, s.id)
    assert got == s
    for name, value in fields.items():
        if name == "scene":
            assert list(got.scene) == value
        elif name == "metadata":
            assert dict(got.metadata) == value
        else:
            assert getattr(got, name) == value, name
    assert ms_of(got.max_duration) == 120_500
    assert got.rendered_situation == fields["situation"]  # render_templates is off


async def test_create_ignores_id_and_output_only_fields(running: Running) -> None:
    sent = S.Session(
        id="sess_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        agent_id="npc",
        situation="plain",
        state=S.SESSION_STATE_TERMINATED,
        create_time=ts_ms(1000),
        end_time=ts_ms(2000),
        duration=secs(99),
        summary="made up",
        rendered_situation="made up",
        end_reason=S.END_REASON_MAX_DURATION,
    )
    resp = await running.stub.CreateSession(
        pb.CreateSessionRequest(session=sent), metadata=running.md()
    )
    s = resp.session
    assert s.id != sent.id
    assert s.state == S.SESSION_STATE_CREATED
    assert ms_of(s.create_time) > 1_000_000
    assert not s.HasField("end_time")
    assert ms_of(s.duration) == 0
    assert s.summary == ""
    assert s.rendered_situation == "plain"
    assert s.end_reason == S.END_REASON_UNSPECIFIED
    err = await rpc_error(get_session(running, sent.id))
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_create_renders_templates(running: Running) -> None:
    s = (
        await create(
            running,
            user_id="u-42",
            situation="Greet {{ metadata.user_name }} ({{ user_id }}) at the {{ scene[0].name }}.",
            metadata={"user_name": "Ada"},
            scene=[S.SceneItem(name="tavern")],
            render_templates=True,
        )
    ).session
    assert s.rendered_situation == "Greet Ada (u-42) at the tavern."
    assert s.situation.startswith("Greet {{ metadata.user_name }}")  # the template is kept
    assert (await get_session(running, s.id)).rendered_situation == s.rendered_situation


async def test_create_retry_with_request_id_returns_same_session_and_token(
    running: Running,
) -> None:
    first = await create(running, request_id="req-1", metadata={"a": "1"})
    again = await create(running, request_id="req-1", metadata={"a": "1"})
    assert again.session.id == first.session.id
    assert again.access_token == first.access_token
    assert again.connect.grpc_target == first.connect.grpc_target
    assert [s.id for s in await list_all(running)] == [first.session.id]

    # A retry after the session moved on still answers with that session, not a new one.
    await terminate(running, first.session.id)
    third = await create(running, request_id="req-1", metadata={"a": "1"})
    assert third.session.id == first.session.id
    assert third.session.state == S.SESSION_STATE_TERMINATED
    assert third.access_token == first.access_token

    # request_id is scoped to the key: another key's same request_id is another session.
    other = await running.new_key()
    theirs = await create(running, key=other, request_id="req-1", metadata={"a": "1"})
    assert theirs.session.id != first.session.id
    assert theirs.access_token != first.access_token


async def test_concurrent_retries_with_one_request_id_make_one_session(running: Running) -> None:
    results = await asyncio.gather(*(create(running, request_id="burst") for _ in range(5)))
    assert len({r.session.id for r in results}) == 1
    assert len({r.access_token for r in results}) == 1
    assert len(await list_all(running)) == 1


async def test_request_id_reused_with_another_body_is_invalid(running: Running) -> None:
    first = await create(running, request_id="req-2", situation="one")
    err = await rpc_error(create(running, request_id="req-2", situation="two"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err) == ["request_id"]
    assert [s.id for s in await list_all(running)] == [first.session.id]


async def test_continue_from_session_inherits_history(running: Running) -> None:
    parent = (await create(running, agent_id="smith")).session
    await append(running, parent.id, "hello", MessageRole.USER)
    await append(running, parent.id, "welcome, traveller", MessageRole.AGENT)
    await append(running, parent.id, "door opened", MessageRole.SYSTEM)

    child = (await create(running, agent_id="smith", continue_from_session_id=parent.id)).session
    assert child.continue_from_session_id == parent.id
    got = await messages(running, child.id)
    assert [(m.index, m.text, m.inherited_from_session_id) for m in got] == [
        (1, "hello", parent.id),
        (2, "welcome, traveller", parent.id),
        (3, "door opened", parent.id),
    ]
    assert [m.role for m in got] == [
        message_pb2.MESSAGE_ROLE_USER,
        message_pb2.MESSAGE_ROLE_AGENT,
        message_pb2.MESSAGE_ROLE_SYSTEM,
    ]
    # The parent's own messages are its own; the child's new ones continue the numbering.
    assert {m.inherited_from_session_id for m in await messages(running, parent.id)} == {""}
    await append(running, child.id, "I'm back")
    assert [(m.index, m.inherited_from_session_id) for m in await messages(running, child.id)][
        -1
    ] == (4, "")

    # A grandchild keeps where each message really came from.
    grandchild = (
        await create(running, agent_id="smith", continue_from_session_id=child.id)
    ).session
    assert [m.inherited_from_session_id for m in await messages(running, grandchild.id)] == [
        parent.id,
        parent.id,
        parent.id,
        child.id,
    ]


# -- ListSessions ------------------------------------------------------------------------------


async def test_list_sessions_newest_first_in_pages(running: Running) -> None:
    ids = [(await create(running)).session.id for _ in range(7)]
    newest_first = ids[::-1]

    pages: list[list[str]] = []
    token = ""
    for _ in range(10):
        resp = await running.stub.ListSessions(
            pb.ListSessionsRequest(page_size=3, page_token=token), metadata=running.md()
        )
        pages.append([s.id for s in resp.sessions])
        token = resp.next_page_token
        if not token:
            break
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]

    everything = await running.stub.ListSessions(pb.ListSessionsRequest(), metadata=running.md())
    assert [s.id for s in everything.sessions] == newest_first  # page_size 0 means 20
    assert everything.next_page_token == ""
    times = [ms_of(s.create_time) for s in everything.sessions]
    assert times == sorted(times, reverse=True)


async def test_list_sessions_page_size_is_capped_at_100(running_sqlite: Running) -> None:
    r = running_sqlite
    await asyncio.gather(*(create(r) for _ in range(101)))
    resp = await r.stub.ListSessions(pb.ListSessionsRequest(page_size=1000), metadata=r.md())
    assert len(resp.sessions) == 100
    assert resp.next_page_token


async def test_list_sessions_filters(running: Running) -> None:
    a = await create(running, agent_id="smith", user_id="u1", metadata={"level": "3", "zone": "n"})
    b = await create(running, agent_id="smith", user_id="u2", metadata={"level": "3"})
    c = await create(running, agent_id="baker", user_id="u1", metadata={"level": "4", "zone": "n"})
    d = await create(running, agent_id="baker", user_id="u2")
    await terminate(running, d.session.id)
    ids = {"a": a.session.id, "b": b.session.id, "c": c.session.id, "d": d.session.id}

    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "dcba"),
        ({"state": S.SESSION_STATE_TERMINATED}, "d"),
        ({"state": S.SESSION_STATE_CREATED}, "cba"),
        ({"state": S.SESSION_STATE_ACTIVE}, ""),
        ({"agent_id": "smith"}, "ba"),
        ({"user_id": "u1"}, "ca"),
        ({"agent_id": "baker", "user_id": "u1"}, "c"),
        ({"metadata": {"level": "3"}}, "ba"),
        ({"metadata": {"zone": "n"}}, "ca"),
        ({"metadata": {"level": "3", "zone": "n"}}, "a"),  # every pair must match
        ({"metadata": {"level": "3", "zone": "s"}}, ""),
        ({"metadata": {"level": "3"}, "user_id": "u2"}, "b"),
        ({"metadata": {"zone": "n"}, "state": S.SESSION_STATE_CREATED, "agent_id": "baker"}, "c"),
        ({"agent_id": "nobody"}, ""),
    ]
    for filters, expected in cases:
        got = [s.id for s in await list_all(running, **filters)]
        assert got == [ids[x] for x in expected], filters

    # Filters hold across pages too.
    first = await running.stub.ListSessions(
        pb.ListSessionsRequest(page_size=1, agent_id="smith"), metadata=running.md()
    )
    second = await running.stub.ListSessions(
        pb.ListSessionsRequest(page_size=1, agent_id="smith", page_token=first.next_page_token),
        metadata=running.md(),
    )
    assert [s.id for s in first.sessions] + [s.id for s in second.sessions] == [ids["b"], ids["a"]]
    assert second.next_page_token == ""


async def test_list_sessions_token_with_other_filters_is_invalid(running: Running) -> None:
    for agent in ("smith", "smith", "baker"):
        await create(running, agent_id=agent)
    first = await running.stub.ListSessions(
        pb.ListSessionsRequest(page_size=1, agent_id="smith"), metadata=running.md()
    )
    assert first.next_page_token
    for changed in (
        {"agent_id": "baker"},
        {"agent_id": ""},
        {"agent_id": "smith", "state": S.SESSION_STATE_CREATED},
        {"agent_id": "smith", "metadata": {"k": "v"}},
    ):
        err = await rpc_error(
            running.stub.ListSessions(
                pb.ListSessionsRequest(page_size=1, page_token=first.next_page_token, **changed),
                metadata=running.md(),
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, changed
        assert bad_fields(err) == ["page_token"], changed


async def test_list_sessions_paging_is_stable_while_sessions_are_created(
    running: Running,
) -> None:
    originals = [(await create(running)).session.id for _ in range(6)]
    created_meanwhile: list[str] = []
    go, stop = asyncio.Event(), asyncio.Event()

    async def keep_creating() -> None:
        await go.wait()
        while not stop.is_set():
            created_meanwhile.append((await create(running)).session.id)

    async def count_at_least(n: int) -> bool:
        return len(created_meanwhile) >= n

    creator = asyncio.create_task(keep_creating())
    seen: list[str] = []
    try:
        token = ""
        for page in range(3):
            resp = await running.stub.ListSessions(
                pb.ListSessionsRequest(page_size=2, page_token=token), metadata=running.md()
            )
            seen.extend(s.id for s in resp.sessions)
            token = resp.next_page_token
            go.set()
            # More sessions arrive between this page and the next one.
            await wait_until(lambda n=page: count_at_least(2 * (n + 1)), timeout_s=5)
        assert token == ""
    finally:
        stop.set()
        go.set()
        await asyncio.wait_for(creator, timeout=5)

    assert seen == originals[::-1]  # no duplicate, nothing skipped, no newcomer
    assert len(created_meanwhile) >= 6
    everything = [s.id for s in await list_all(running)]
    assert everything[-6:] == originals[::-1]
    assert set(everything[:-6]) == set(created_meanwhile)


# -- UpdateSession -----------------------------------------------------------------------------

_BASE: dict[str, Any] = {
    "agent_id": "smith",
    "user_id": "u1",
    "profile": "shopkeeper",
    "avatar_id": "face-1",
    "connection_type": S.CONNECTION_TYPE_AUDIO,
    "speaker_id": "voice-1",
    "situation": "Hello {{ metadata.user_name }}",
    "dynamic_info": "calm",
    "scene": [S.SceneItem(name="anvil")],
    "metadata": {"user_name": "Ada", "level": "3"},
    "max_duration": secs(600),
    "resume_window": secs(120),
    "render_templates": False,
}
_WRITABLE = (
    "profile",
    "avatar_id",
    "connection_type",
    "speaker_id",
    "situation",
    "dynamic_info",
    "scene",
    "metadata",
    "max_duration",
    "resume_window",
    "render_templates",
)
_UPDATES: list[tuple[str, Any]] = [
    ("profile", "tutor"),
    ("avatar_id", "face-2"),
    ("connection_type", S.CONNECTION_TYPE_TEXT),
    ("speaker_id", "voice-2"),
    ("situation", "A quiet forge."),
    ("dynamic_info", "the player carries the red key"),
    ("scene", [S.SceneItem(name="red key", description="opens the vault")]),
    ("metadata", {"level": "4"}),
    ("max_duration", secs(1200)),
    ("resume_window", secs(60)),
    ("render_templates", True),
]


@pytest.mark.parametrize(("path", "value"), _UPDATES, ids=[u[0] for u in _UPDATES])
async def test_update_each_writable_field(running: Running, path: str, value: Any) -> None:
    before = (await create(running, **_BASE)).session
    after = await update(running, [path], id=before.id, **{path: value})

    expected = S.Session(**{path: value})
    assert getattr(after, path) == getattr(expected, path)
    for other in (*_WRITABLE, "agent_id", "user_id", "create_time", "state"):
        if other != path:
            assert getattr(after, other) == getattr(before, other), other
    assert ms_of(after.update_time) >= ms_of(before.update_time)
    assert await get_session(running, before.id) == after

    if path == "situation":
        assert after.rendered_situation == "A quiet forge."
    elif path == "render_templates":
        assert after.rendered_situation == "Hello Ada"
    else:
        assert after.rendered_situation == before.rendered_situation
    if path == "resume_window":
        assert ms_of(after.expire_time) == ms_of(before.create_time) + 60_000
    else:
        assert after.expire_time == before.expire_time


async def test_update_replaces_metadata_whole_and_refilters(running: Running) -> None:
    s = (await create(running, metadata={"a": "1", "b": "2"})).session
    after = await update(running, ["metadata"], id=s.id, metadata={"c": "3"})
    assert dict(after.metadata) == {"c": "3"}
    assert await list_all(running, metadata={"a": "1"}) == []
    assert [x.id for x in await list_all(running, metadata={"c": "3"})] == [s.id]
    cleared = await update(running, ["metadata"], id=s.id)
    assert dict(cleared.metadata) == {}
    assert await list_all(running, metadata={"c": "3"}) == []


async def test_update_rerenders_template_from_new_metadata(running: Running) -> None:
    s = (
        await create(
            running,
            situation="Hi {{ metadata.name }}",
            metadata={"name": "Ada"},
            render_templates=True,
        )
    ).session
    assert s.rendered_situation == "Hi Ada"
    after = await update(running, ["metadata"], id=s.id, metadata={"name": "Bo"})
    assert after.rendered_situation == "Hi Bo"
    assert after.situation == "Hi {{ metadata.name }}"


async def test_update_mask_naming_an_unset_duration_restores_the_default(running: Running) -> None:
    s = (await create(running, max_duration=secs(60), resume_window=secs(30))).session
    after = await update(running, ["max_duration", "resume_window"], id=s.id)
    assert ms_of(after.max_duration) == 3_600_000
    assert ms_of(after.resume_window) == 300_000
    assert ms_of(after.expire_time) == ms_of(s.create_time) + 300_000


async def test_update_resume_window_of_paused_session_moves_expire_time(running: Running) -> None:
    s = (await create(running, resume_window=secs(100))).session
    await join(running, s.id)
    paused = await disconnect(running, s.id)
    paused_at = ms_of(paused.expire_time) - 100_000
    after = await update(running, ["resume_window"], id=s.id, resume_window=secs(250))
    assert after.state == S.SESSION_STATE_PAUSED
    assert ms_of(after.expire_time) == paused_at + 250_000


async def test_update_requires_update_mask(running: Running) -> None:
    s = (await create(running)).session
    err = await rpc_error(
        running.stub.UpdateSession(
            pb.UpdateSessionRequest(session=S.Session(id=s.id, profile="x")), metadata=running.md()
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err) == ["update_mask"]
    assert await get_session(running, s.id) == s


@pytest.mark.parametrize("end", ["terminate", "expire"])
async def test_update_of_ended_session_fails_precondition(running: Running, end: str) -> None:
    s = (await create(running)).session
    if end == "terminate":
        await terminate(running, s.id)
    else:
        await manager(running).apply(s.id, SessionEvent.EXPIRE)
    ended = await get_session(running, s.id)
    err = await rpc_error(update(running, ["profile"], id=s.id, profile="tutor"))
    assert err.code() == FP
    assert await get_session(running, s.id) == ended


# -- DisconnectSession -------------------------------------------------------------------------


async def test_disconnect_pauses_an_active_session(running: Running) -> None:
    s = (await create(running, resume_window=secs(90))).session
    await join(running, s.id)
    active = await get_session(running, s.id)
    assert active.state == S.SESSION_STATE_ACTIVE
    assert active.HasField("start_time")
    # ACTIVE: expire_time is when max_duration runs out if the user stays.
    assert ms_of(active.expire_time) == ms_of(active.start_time) + 3_600_000

    before = now_ms()
    paused = await disconnect(running, s.id)
    assert paused.state == S.SESSION_STATE_PAUSED
    assert paused.start_time == active.start_time
    assert before + 90_000 <= ms_of(paused.expire_time) <= now_ms() + 90_000
    assert not paused.HasField("end_time")
    assert paused.end_reason == S.END_REASON_UNSPECIFIED
    assert await get_session(running, s.id) == paused

    # PAUSED again: OK and nothing changes.
    again = await disconnect(running, s.id)
    assert again == paused
    assert await get_session(running, s.id) == paused

    # Joining again resumes it; the first start_time stays.
    await join(running, s.id)
    resumed = await get_session(running, s.id)
    assert resumed.state == S.SESSION_STATE_ACTIVE
    assert resumed.start_time == active.start_time


async def test_disconnect_of_created_or_ended_session_fails_precondition(
    running: Running,
) -> None:
    s = (await create(running)).session
    err = await rpc_error(disconnect(running, s.id))
    assert err.code() == FP
    assert await get_session(running, s.id) == s
    ended = await terminate(running, s.id)
    err = await rpc_error(disconnect(running, s.id))
    assert err.code() == FP
    assert await get_session(running, s.id) == ended


# -- TerminateSession --------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["CREATED", "ACTIVE", "PAUSED"])
async def test_terminate_ends_a_live_session(running: Running, state: str) -> None:
    s = (await create(running)).session
    if state in ("ACTIVE", "PAUSED"):
        await join(running, s.id)
    if state == "PAUSED":
        await disconnect(running, s.id)
    assert (await get_session(running, s.id)).state == getattr(S, f"SESSION_STATE_{state}")

    before = now_ms()
    ended = await terminate(running, s.id)
    assert ended.state == S.SESSION_STATE_TERMINATED
    assert ended.end_reason == S.END_REASON_TERMINATED
    assert before <= ms_of(ended.end_time) <= now_ms()
    assert not ended.HasField("expire_time")
    assert await get_session(running, s.id) == ended

    err = await rpc_error(terminate(running, s.id))
    assert err.code() == FP
    # Time passes (the server's clock is the wall clock): an ended session's duration does not
    # grow with it, and the refused call changed nothing.
    await wait_until(lambda: now_ms() >= ms_of(ended.end_time) + 10, timeout_s=1)
    assert await get_session(running, s.id) == ended


async def test_concurrent_terminates_take_effect_once(running: Running) -> None:
    for _ in range(4):
        s = (await create(running)).session
        outcomes = await asyncio.gather(
            terminate(running, s.id), terminate(running, s.id), return_exceptions=True
        )
        ok = [o for o in outcomes if isinstance(o, S.Session)]
        failed = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert len(ok) == 1, outcomes
        assert len(failed) == 1, outcomes
        assert failed[0].code() == FP
        assert ok[0].state == S.SESSION_STATE_TERMINATED
        assert await get_session(running, s.id) == ok[0]


# -- Expiry ------------------------------------------------------------------------------------


async def test_sessions_expire_when_a_limit_runs_out(running: Running) -> None:
    created = (await create(running, resume_window=secs(1))).session
    paused = (await create(running, resume_window=secs(1))).session
    await join(running, paused.id)
    await disconnect(running, paused.id)
    active = (await create(running, max_duration=secs(1))).session
    await join(running, active.id)
    ids = (created.id, paused.id, active.id)

    async def all_ended() -> bool:
        states = [(await get_session(running, i)).state for i in ids]
        return states == [S.SESSION_STATE_EXPIRED] * 3

    await wait_until(all_ended, timeout_s=3)
    for sid, reason in (
        (created.id, S.END_REASON_RESUME_WINDOW),
        (paused.id, S.END_REASON_RESUME_WINDOW),
        (active.id, S.END_REASON_MAX_DURATION),
    ):
        s = await get_session(running, sid)
        assert s.end_reason == reason, sid
        assert s.HasField("end_time")
        assert s.HasField("expire_time")
        assert ms_of(s.end_time) - ms_of(s.create_time) >= 1000
    c = await get_session(running, created.id)
    assert ms_of(c.end_time) - ms_of(c.create_time) < 2000
    # Interaction time is billed up to max_duration, not up to when the sweep noticed.
    assert ms_of((await get_session(running, active.id)).duration) == 1000

    # An expired session is read-only.
    for sid in ids:
        ended = await get_session(running, sid)
        for call in (
            terminate(running, sid),
            disconnect(running, sid),
            update(running, ["profile"], id=sid, profile="x"),
        ):
            assert (await rpc_error(call)).code() == FP
        assert await get_session(running, sid) == ended


# -- ListMessages ------------------------------------------------------------------------------


async def test_list_messages_pages_oldest_first(running: Running) -> None:
    s = (await create(running)).session
    roles = [MessageRole.USER, MessageRole.AGENT, MessageRole.SYSTEM]
    start = now_ms()
    for i in range(7):
        await running.repo.append_message(
            s.id,
            role=roles[i % 3],
            text=f"m{i + 1}",
            interaction_id=f"int-{i // 2}",
            now_ms=start + i,
            interrupted=(i == 1),
        )
    pages: list[list[int]] = []
    token = ""
    for _ in range(10):
        resp = await running.stub.ListMessages(
            pb.ListMessagesRequest(session_id=s.id, page_size=3, page_token=token),
            metadata=running.md(),
        )
        pages.append([m.index for m in resp.messages])
        token = resp.next_page_token
        if not token:
            break
    assert pages == [[1, 2, 3], [4, 5, 6], [7]]

    got = await messages(running, s.id)
    assert [m.text for m in got] == [f"m{i}" for i in range(1, 8)]
    assert got[1] == message_pb2.Message(
        index=2,
        role=message_pb2.MESSAGE_ROLE_AGENT,
        text="m2",
        interaction_id="int-0",
        create_time=ts_ms(start + 1),
        interrupted=True,
    )
    assert [m.interrupted for m in got].count(True) == 1

    empty = (await create(running)).session
    resp = await running.stub.ListMessages(
        pb.ListMessagesRequest(session_id=empty.id), metadata=running.md()
    )
    assert list(resp.messages) == []
    assert resp.next_page_token == ""


# -- GetUsage ----------------------------------------------------------------------------------


async def usage(
    r: Running, start_ms: int, end_ms: int, session_id: str = "", key: str | None = None
) -> pb.GetUsageResponse:
    return await r.stub.GetUsage(
        pb.GetUsageRequest(
            start_time=ts_ms(start_ms), end_time=ts_ms(end_ms), session_id=session_id
        ),
        metadata=r.md(key),
    )


async def test_get_usage_counts_active_time(running: Running) -> None:
    other = await running.new_key()
    t0 = now_ms()
    a = (await create(running, agent_id="smith")).session
    b = (await create(running, agent_id="baker")).session
    theirs = (await create(running, key=other)).session
    for sid in (a.id, b.id, theirs.id):
        await join(running, sid)
    # The sleeps are the ACTIVE time being measured (the server bills by the wall clock): b is
    # live for about 150 ms, a for about 300 ms. They order nothing.
    await asyncio.sleep(0.15)
    await disconnect(running, b.id)
    await asyncio.sleep(0.15)
    await disconnect(running, a.id)
    await disconnect(running, theirs.id, key=other)
    t1 = now_ms()
    a, b = await get_session(running, a.id), await get_session(running, b.id)
    a_ms, b_ms = ms_of(a.duration), ms_of(b.duration)
    assert 300 <= a_ms < 1000
    assert 150 <= b_ms < a_ms

    resp = await usage(running, t0 - 1000, t1 + 1000)
    assert [(u.session_id, u.agent_id, ms_of(u.duration)) for u in resp.sessions] == [
        (a.id, "smith", a_ms),  # most used first
        (b.id, "baker", b_ms),
    ]
    assert ms_of(resp.total_duration) == a_ms + b_ms

    # The window clips the interval on either side.
    a_start = ms_of(a.start_time)
    assert (
        ms_of((await usage(running, a_start + 100, t1 + 1000, a.id)).sessions[0].duration)
        == a_ms - 100
    )
    head = await usage(running, a_start - 1000, a_start + 100, a.id)
    assert ms_of(head.sessions[0].duration) == 100
    assert ms_of(head.total_duration) == 100
    assert ms_of((await usage(running, a_start + 50, a_start + 80, a.id)).total_duration) == 30

    # session_id filter.
    only_b = await usage(running, t0 - 1000, t1 + 1000, b.id)
    assert [u.session_id for u in only_b.sessions] == [b.id]
    assert ms_of(only_b.total_duration) == b_ms

    # Windows without ACTIVE time.
    before = await usage(running, t0 - 5000, t0 - 1000)
    assert list(before.sessions) == []
    assert ms_of(before.total_duration) == 0
    never_active = (await create(running)).session
    none = await usage(running, t0 - 1000, now_ms() + 1000, never_active.id)
    assert list(none.sessions) == []
    assert ms_of(none.total_duration) == 0

    # Another key's usage is invisible here, and visible to that key.
    mine = await usage(running, t0 - 1000, t1 + 1000)
    assert theirs.id not in {u.session_id for u in mine.sessions}
    their_view = await usage(running, t0 - 1000, t1 + 1000, key=other)
    assert [u.session_id for u in their_view.sessions] == [theirs.id]
    assert ms_of(their_view.total_duration) > 0
    err = await rpc_error(usage(running, t0 - 1000, t1 + 1000, theirs.id))
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_get_usage_counts_an_open_interval_up_to_now(running: Running) -> None:
    t0 = now_ms()
    s = (await create(running)).session
    await join(running, s.id)
    await asyncio.sleep(0.1)  # the ACTIVE time being measured (wall clock): it orders nothing
    resp = await usage(running, t0 - 1000, now_ms() + 60_000, s.id)
    assert 100 <= ms_of(resp.total_duration) < 1000
    live = await get_session(running, s.id)
    assert ms_of(live.duration) >= ms_of(resp.total_duration)
