"""Bad calls to every SessionService RPC: the exact status, the field named, and nothing changed.

Each case runs against a small world (own sessions in several states, with messages and usage, and
another key's session), snapshots every row of both keys, makes the bad call, and checks that the
database is exactly as before and that the server still answers.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
import pytest
import pytest_asyncio
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from parley.v1 import session_pb2
from parley.v1 import session_service_pb2 as pb

from parleyd.domain.paging import filters_fingerprint
from parleyd.domain.session import MessageRole
from tests.grpc import (
    bad_fields,
    db_snapshot,
    join,
    key_id_of,
    ms_of,
    now_ms,
    rpc_error,
    secs,
    status_details,
    ts_ms,
)
from tests.support.server import Running, serving
from tests.support.sessions import create, disconnect, get_session, terminate

pytestmark = pytest.mark.asyncio(loop_scope="module")

S = session_pb2.Session
Item = session_pb2.SceneItem
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED = grpc.StatusCode.FAILED_PRECONDITION
UNAUTH = grpc.StatusCode.UNAUTHENTICATED

UNKNOWN_ID = "sess_01ARZ3NDEKTSV4RRFFQ69G5FAV"  # well formed, never created
MALFORMED_IDS = (
    "sess_123",
    "01ARZ3NDEKTSV4RRFFQ69G5FAV",  # no prefix
    "sess_01ARZ3NDEKTSV4RRFFQ69G5FAI",  # I is not in Crockford's base 32
    UNKNOWN_ID + "\n",
)
LONG = "x" * 129  # one over the 128-character limit of ids and names


@dataclass
class World:
    r: Running
    sid: str  # CREATED, with 2 messages and a template situation
    paused_id: str  # PAUSED, with a usage interval
    ended_id: str  # TERMINATED
    foreign_id: str  # another key's session
    other_key: str
    key_ids: tuple[str, str]
    sessions_token: str  # next_page_token of ListSessions(page_size=1, agent_id="npc")
    messages_token: str  # next_page_token of ListMessages(sid, page_size=1)
    paused_messages_token: str  # next_page_token of ListMessages(paused_id, page_size=1)


async def build_world(r: Running) -> World:
    sid = (
        await create(
            r,
            situation="Hello {{ metadata.user_name }}",
            metadata={"level": "3"},
            scene=[Item(name="anvil")],
        )
    ).session.id
    for text in ("hi", "well met"):
        await r.repo.append_message(
            sid, role=MessageRole.USER, text=text, interaction_id="i1", now_ms=now_ms()
        )
    paused_id = (await create(r)).session.id
    await join(r, paused_id)
    await disconnect(r, paused_id)
    for text in ("a", "b"):
        await r.repo.append_message(
            paused_id, role=MessageRole.AGENT, text=text, interaction_id="i2", now_ms=now_ms()
        )
    ended_id = (await create(r)).session.id
    await terminate(r, ended_id)
    other_key = await r.new_key()
    foreign_id = (await create(r, key=other_key, metadata={"level": "3"})).session.id
    sessions = await r.stub.ListSessions(
        pb.ListSessionsRequest(page_size=1, agent_id="npc"), metadata=r.md()
    )
    msgs = await r.stub.ListMessages(
        pb.ListMessagesRequest(session_id=sid, page_size=1), metadata=r.md()
    )
    paused_msgs = await r.stub.ListMessages(
        pb.ListMessagesRequest(session_id=paused_id, page_size=1), metadata=r.md()
    )
    assert sessions.next_page_token
    assert msgs.next_page_token
    assert paused_msgs.next_page_token
    return World(
        r=r,
        sid=sid,
        paused_id=paused_id,
        ended_id=ended_id,
        foreign_id=foreign_id,
        other_key=other_key,
        key_ids=(r.key_id, await key_id_of(r, other_key)),
        sessions_token=sessions.next_page_token,
        messages_token=msgs.next_page_token,
        paused_messages_token=paused_msgs.next_page_token,
    )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('bad_input') / 'parleyd.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(module_database_url: str) -> AsyncIterator[World]:
    """One server and world per database for the whole module: every case leaves it unchanged."""
    async with serving(module_database_url) as r:
        yield await build_world(r)


def crafted_token(kind: str, cursor: Any, filters: dict[str, Any]) -> str:
    """A token in the server's format with a cursor it never handed out."""
    blob = json.dumps({"k": kind, "c": cursor, "f": filters_fingerprint(filters)})
    return base64.urlsafe_b64encode(blob.encode()).decode().rstrip("=")


Build = Callable[[World], Message]


class Case(NamedTuple):
    id: str
    method: str
    build: Build
    code: grpc.StatusCode
    field: str | None = None  # INVALID_ARGUMENT: what every violation names ('x*': a prefix)


CREATE, GET, LIST, UPDATE = "CreateSession", "GetSession", "ListSessions", "UpdateSession"
DISCONNECT, TERMINATE = "DisconnectSession", "TerminateSession"
MESSAGES, USAGE = "ListMessages", "GetUsage"


def bad(method: str, name: str, build: Build, field: str) -> Case:
    return Case(f"{method}:{name}", method, build, INVALID, field)


def absent(method: str, name: str, build: Build) -> Case:
    return Case(f"{method}:{name}", method, build, NOT_FOUND)


def refused(method: str, name: str, build: Build) -> Case:
    return Case(f"{method}:{name}", method, build, FAILED)


def new(**fields: Any) -> Build:
    """CreateSessionRequest of a session with these fields (agent_id 'npc' unless given)."""
    fields.setdefault("agent_id", "npc")
    return lambda w: pb.CreateSessionRequest(session=S(**fields))


def templ(situation: str) -> Build:
    return new(situation=situation, render_templates=True)


def upd(paths: list[str], session_id: Callable[[World], str] | None = None, **fields: Any) -> Build:
    """UpdateSessionRequest of the world's CREATED session (or another one)."""
    return lambda w: pb.UpdateSessionRequest(
        session=S(id=(session_id or (lambda x: x.sid))(w), **fields),
        update_mask=FieldMask(paths=paths),
    )


def lst(**fields: Any) -> Build:
    return lambda w: pb.ListSessionsRequest(**fields)


def lst_token(token: Callable[[World], str], **fields: Any) -> Build:
    return lambda w: pb.ListSessionsRequest(page_token=token(w), **fields)


def msgs(token: Callable[[World], str] = lambda w: "", page_size: int = 0) -> Build:
    return lambda w: pb.ListMessagesRequest(
        session_id=w.sid, page_token=token(w), page_size=page_size
    )


def usage(start: Timestamp | None, end: Timestamp | None, session_id: str = "") -> Build:
    def build(w: World) -> Message:
        req = pb.GetUsageRequest(session_id=w.foreign_id if session_id == "foreign" else session_id)
        if start is not None:
            req.start_time.CopyFrom(start)
        if end is not None:
            req.end_time.CopyFrom(end)
        return req

    return build


T0 = 1_700_000_000_000
AT0, AT1 = ts_ms(T0), ts_ms(T0 + 1)
NO_FILTERS = {"state": "", "agent_id": "", "user_id": "", "metadata": {}}
PAIRS_65 = {f"k{i}": "v" for i in range(65)}
ITEMS_65 = [Item(name=f"i{i}") for i in range(65)]

# Requests that name one session, per RPC; used for the id cases every such RPC shares.
BY_ID: dict[str, Callable[[str], Message]] = {
    GET: lambda i: pb.GetSessionRequest(session_id=i),
    DISCONNECT: lambda i: pb.DisconnectSessionRequest(session_id=i),
    TERMINATE: lambda i: pb.TerminateSessionRequest(session_id=i),
    MESSAGES: lambda i: pb.ListMessagesRequest(session_id=i),
}


def _id_cases() -> list[Case]:
    out: list[Case] = []
    for method, make in BY_ID.items():
        out.append(bad(method, "missing-id", lambda w, m=make: m(""), "session_id"))
        for n, value in enumerate(MALFORMED_IDS):
            build: Build = lambda w, m=make, v=value: m(v)  # noqa: E731
            out.append(bad(method, f"malformed-id-{n}", build, "session_id"))
        out.append(absent(method, "unknown-id", lambda w, m=make: m(UNKNOWN_ID)))
        out.append(absent(method, "foreign-id", lambda w, m=make: m(w.foreign_id)))
    return out


CASES: list[Case] = [
    # CreateSession: required fields and limits
    bad(CREATE, "no-session", lambda w: pb.CreateSessionRequest(), "session"),
    bad(CREATE, "no-agent_id", new(agent_id=""), "session.agent_id"),
    bad(CREATE, "blank-agent_id", new(agent_id="  "), "session.agent_id"),
    bad(CREATE, "long-agent_id", new(agent_id=LONG), "session.agent_id"),
    bad(CREATE, "long-user_id", new(user_id=LONG), "session.user_id"),
    bad(CREATE, "long-profile", new(profile=LONG), "session.profile"),
    bad(CREATE, "long-avatar_id", new(avatar_id=LONG), "session.avatar_id"),
    bad(CREATE, "long-speaker_id", new(speaker_id=LONG), "session.speaker_id"),
    bad(CREATE, "situation-2501-words", new(situation="w " * 2501), "session.situation"),
    bad(CREATE, "situation-32769-chars", new(situation="x" * 32_769), "session.situation"),
    bad(CREATE, "dynamic_info-4097", new(dynamic_info="x" * 4097), "session.dynamic_info"),
    bad(CREATE, "65-scene-items", new(scene=ITEMS_65), "session.scene"),
    bad(CREATE, "scene-no-name", new(scene=[Item(description="d")]), "session.scene[0].name"),
    bad(CREATE, "scene-name-129", new(scene=[Item(name=LONG)]), "session.scene[0].name"),
    bad(
        CREATE,
        "scene-description-1025",
        new(scene=[Item(name="n", description="d" * 1025)]),
        "session.scene[0].description",
    ),
    bad(CREATE, "65-metadata-pairs", new(metadata=PAIRS_65), "session.metadata"),
    bad(CREATE, "metadata-key-65", new(metadata={"k" * 65: "v"}), "session.metadata[*"),
    bad(CREATE, "metadata-value-513", new(metadata={"k": "v" * 513}), "session.metadata[k]"),
    bad(CREATE, "metadata-empty-key", new(metadata={"": "v"}), "session.metadata"),
    bad(CREATE, "max_duration-zero", new(max_duration=Duration()), "session.max_duration"),
    bad(CREATE, "max_duration-negative", new(max_duration=secs(-5)), "session.max_duration"),
    bad(CREATE, "max_duration-over-key", new(max_duration=secs(3601)), "session.max_duration"),
    bad(CREATE, "resume_window-0.5s", new(resume_window=secs(0.5)), "session.resume_window"),
    bad(CREATE, "resume_window-8d", new(resume_window=secs(8 * 86400)), "session.resume_window"),
    bad(
        CREATE,
        "resume_window-bad-nanos",
        new(resume_window=Duration(seconds=5, nanos=-1)),
        "session.resume_window",
    ),
    bad(CREATE, "connection_type-99", new(connection_type=99), "session.connection_type"),
    bad(
        CREATE,
        "request_id-129",
        lambda w: pb.CreateSessionRequest(session=S(agent_id="npc"), request_id=LONG),
        "request_id",
    ),
    bad(
        CREATE,
        "nul-in-request_id",
        lambda w: pb.CreateSessionRequest(session=S(agent_id="npc"), request_id="r\x00"),
        "request_id",
    ),
    bad(CREATE, "nul-in-agent_id", new(agent_id="np\x00c"), "session.agent_id"),
    bad(CREATE, "nul-in-metadata", new(metadata={"k": "v\x00"}), "session.metadata[k]"),
    bad(CREATE, "nul-in-scene", new(scene=[Item(name="a\x00")]), "session.scene[0].name"),
    # CreateSession: templates (render_templates on)
    bad(CREATE, "template-unknown-name", templ("Hi {{ metadata.nope }}"), "session.situation"),
    bad(CREATE, "template-syntax-error", templ("Hi {{ metadata."), "session.situation"),
    bad(CREATE, "template-sandbox", templ("{{ metadata.__class__.__mro__ }}"), "session.situation"),
    bad(
        CREATE,
        "template-renders-2501-words",
        templ("{% for i in range(2501) %}w {% endfor %}"),
        "session.situation",
    ),
    # CreateSession: continue_from_session_id
    bad(
        CREATE,
        "continue-malformed",
        new(continue_from_session_id="sess_1"),
        "session.continue_from_session_id",
    ),
    absent(CREATE, "continue-unknown", new(continue_from_session_id=UNKNOWN_ID)),
    absent(CREATE, "continue-foreign", lambda w: new(continue_from_session_id=w.foreign_id)(w)),
    bad(
        CREATE,
        "continue-other-agent",
        lambda w: new(agent_id="baker", continue_from_session_id=w.sid)(w),
        "session.continue_from_session_id",
    ),
    # GetSession, DisconnectSession, TerminateSession, ListMessages: the session id
    *_id_cases(),
    # DisconnectSession / TerminateSession: the state
    refused(DISCONNECT, "created", lambda w: pb.DisconnectSessionRequest(session_id=w.sid)),
    refused(DISCONNECT, "ended", lambda w: pb.DisconnectSessionRequest(session_id=w.ended_id)),
    refused(TERMINATE, "ended", lambda w: pb.TerminateSessionRequest(session_id=w.ended_id)),
    # ListSessions
    bad(LIST, "garbage-token", lst(page_token="garbage!"), "page_token"),
    bad(LIST, "base64-garbage-token", lst(page_token="eyJrIjoxfQ"), "page_token"),
    bad(
        LIST,
        "token-other-filters",
        lst_token(lambda w: w.sessions_token, agent_id="x"),
        "page_token",
    ),
    bad(LIST, "token-without-filters", lst_token(lambda w: w.sessions_token), "page_token"),
    bad(LIST, "messages-token", lst_token(lambda w: w.messages_token), "page_token"),
    bad(
        LIST,
        "crafted-nul-cursor",
        lst(page_token=crafted_token("sessions", "\x00", NO_FILTERS)),
        "page_token",
    ),
    bad(
        LIST,
        "crafted-int-cursor",
        lst(page_token=crafted_token("sessions", 7, NO_FILTERS)),
        "page_token",
    ),
    bad(LIST, "negative-page_size", lst(page_size=-1), "page_size"),
    bad(LIST, "unknown-state", lst(state=42), "state"),
    bad(LIST, "long-agent_id", lst(agent_id=LONG), "agent_id"),
    bad(LIST, "long-user_id", lst(user_id=LONG), "user_id"),
    bad(LIST, "65-metadata-pairs", lst(metadata=PAIRS_65), "metadata"),
    bad(LIST, "metadata-key-65", lst(metadata={"k" * 65: "v"}), "metadata[*"),
    bad(LIST, "metadata-value-513", lst(metadata={"k": "v" * 513}), "metadata[k]"),
    bad(LIST, "nul-in-agent_id", lst(agent_id="\x00"), "agent_id"),
    bad(LIST, "nul-in-metadata", lst(metadata={"k": "\x00"}), "metadata[k]"),
    # UpdateSession
    bad(
        UPDATE,
        "no-session",
        lambda w: pb.UpdateSessionRequest(update_mask=FieldMask(paths=["profile"])),
        "session",
    ),
    bad(UPDATE, "no-id", upd(["profile"], lambda w: "", profile="p"), "session.id"),
    bad(UPDATE, "malformed-id", upd(["profile"], lambda w: "sess_1"), "session.id"),
    absent(UPDATE, "unknown-id", upd(["profile"], lambda w: UNKNOWN_ID, profile="p")),
    absent(UPDATE, "foreign-id", upd(["profile"], lambda w: w.foreign_id, profile="p")),
    refused(UPDATE, "ended", upd(["profile"], lambda w: w.ended_id, profile="p")),
    bad(UPDATE, "no-mask", upd([], profile="p"), "update_mask"),
    bad(UPDATE, "agent_id", upd(["agent_id"], agent_id="baker"), "session.agent_id"),
    bad(UPDATE, "user_id", upd(["user_id"], user_id="u9"), "session.user_id"),
    bad(
        UPDATE,
        "agent_id-and-profile",
        upd(["profile", "agent_id"], profile="p"),
        "session.agent_id",
    ),
    bad(
        UPDATE,
        "continue_from",
        upd(["continue_from_session_id"]),
        "session.continue_from_session_id",
    ),
    bad(UPDATE, "output-only-state", upd(["state"], state=4), "session.state"),
    bad(UPDATE, "output-only-id", upd(["id"]), "session.id"),
    bad(UPDATE, "unknown-path", upd(["colour"]), "update_mask.paths"),
    bad(UPDATE, "nested-path", upd(["metadata.level"]), "update_mask.paths"),
    bad(
        UPDATE,
        "situation-2501-words",
        upd(["situation"], situation="w " * 2501),
        "session.situation",
    ),
    bad(UPDATE, "65-metadata-pairs", upd(["metadata"], metadata=PAIRS_65), "session.metadata"),
    bad(
        UPDATE, "metadata-key-65", upd(["metadata"], metadata={"k" * 65: "v"}), "session.metadata[*"
    ),
    bad(
        UPDATE,
        "metadata-value-513",
        upd(["metadata"], metadata={"k": "v" * 513}),
        "session.metadata[k]",
    ),
    bad(UPDATE, "65-scene-items", upd(["scene"], scene=ITEMS_65), "session.scene"),
    bad(
        UPDATE,
        "dynamic_info-4097",
        upd(["dynamic_info"], dynamic_info="x" * 4097),
        "session.dynamic_info",
    ),
    bad(UPDATE, "long-profile", upd(["profile"], profile=LONG), "session.profile"),
    bad(
        UPDATE,
        "max_duration-over-key",
        upd(["max_duration"], max_duration=secs(3601)),
        "session.max_duration",
    ),
    bad(
        UPDATE,
        "resume_window-8d",
        upd(["resume_window"], resume_window=secs(8 * 86400)),
        "session.resume_window",
    ),
    bad(
        UPDATE,
        "connection_type-7",
        upd(["connection_type"], connection_type=7),
        "session.connection_type",
    ),
    # The stored situation names metadata.user_name, which the session's metadata lacks.
    bad(
        UPDATE,
        "template-without-value",
        upd(["render_templates"], render_templates=True),
        "session.situation",
    ),
    bad(
        UPDATE,
        "nul-in-dynamic_info",
        upd(["dynamic_info"], dynamic_info="\x00"),
        "session.dynamic_info",
    ),
    # ListMessages
    bad(MESSAGES, "garbage-token", msgs(lambda w: "%%%"), "page_token"),
    bad(MESSAGES, "other-sessions-token", msgs(lambda w: w.paused_messages_token), "page_token"),
    bad(MESSAGES, "sessions-token", msgs(lambda w: w.sessions_token), "page_token"),
    bad(
        MESSAGES,
        "crafted-huge-cursor",
        msgs(lambda w: crafted_token("messages", 10**30, {"session_id": w.sid})),
        "page_token",
    ),
    bad(
        MESSAGES,
        "crafted-negative-cursor",
        msgs(lambda w: crafted_token("messages", -1, {"session_id": w.sid})),
        "page_token",
    ),
    bad(MESSAGES, "negative-page_size", msgs(page_size=-3), "page_size"),
    # GetUsage
    bad(USAGE, "no-start", usage(None, AT0), "start_time"),
    bad(USAGE, "no-end", usage(AT0, None), "end_time"),
    bad(USAGE, "no-window", usage(None, None), "start_time"),
    bad(USAGE, "end-before-start", usage(AT1, AT0), "end_time"),
    bad(USAGE, "end-equals-start", usage(AT0, AT0), "end_time"),
    bad(USAGE, "end-out-of-range", usage(AT0, Timestamp(seconds=2**62)), "end_time"),
    bad(USAGE, "start-out-of-range", usage(Timestamp(seconds=-(2**62)), AT0), "start_time"),
    bad(USAGE, "start-bad-nanos", usage(Timestamp(seconds=1, nanos=-5), AT0), "start_time"),
    bad(USAGE, "malformed-session", usage(AT0, AT1, "sess_x"), "session_id"),
    absent(USAGE, "unknown-session", usage(AT0, AT1, UNKNOWN_ID)),
    absent(USAGE, "foreign-session", usage(AT0, AT1, "foreign")),
]


def _matches(field: str, pattern: str) -> bool:
    return field.startswith(pattern[:-1]) if pattern.endswith("*") else field == pattern


async def _server_still_answers(w: World) -> None:
    health = health_pb2_grpc.HealthStub(w.r.channel)
    resp = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    assert (await get_session(w.r, w.sid)).id == w.sid


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_call_is_refused_and_changes_nothing(world: World, case: Case) -> None:
    before = await db_snapshot(world.r, world.key_ids)
    call = getattr(world.r.stub, case.method)(case.build(world), metadata=world.r.md())
    err = await rpc_error(call)
    assert err.code() == case.code, err.details()
    details = status_details(err)
    assert details is not None
    assert details.message == err.details()
    if case.code == INVALID:
        fields = bad_fields(err)
        assert fields, "INVALID_ARGUMENT without BadRequest field violations"
        assert case.field is not None
        assert all(_matches(f, case.field) for f in fields), fields
    assert await db_snapshot(world.r, world.key_ids) == before
    await _server_still_answers(world)


# -- credentials -------------------------------------------------------------------------------

# One valid request per RPC: only the credentials are wrong.
GOOD: dict[str, Build] = {
    CREATE: new(),
    GET: lambda w: pb.GetSessionRequest(session_id=w.sid),
    LIST: lst(),
    UPDATE: upd(["profile"], profile="p"),
    DISCONNECT: lambda w: pb.DisconnectSessionRequest(session_id=w.paused_id),
    TERMINATE: lambda w: pb.TerminateSessionRequest(session_id=w.sid),
    MESSAGES: msgs(),
    USAGE: lambda w: usage(AT0, ts_ms(now_ms()))(w),
}
CREDENTIALS: dict[str, Callable[[World], tuple[tuple[str, str], ...]]] = {
    "no-key": lambda w: (),
    "empty-key": lambda w: (("x-api-key", ""),),
    "wrong-key": lambda w: (("x-api-key", "pk_" + "A" * 43),),
    "other-header": lambda w: (("authorization", "Bearer " + w.r.api_key),),
}


@pytest.mark.parametrize("cred", list(CREDENTIALS))
@pytest.mark.parametrize("method", list(GOOD))
async def test_missing_or_wrong_key_is_unauthenticated(
    world: World, method: str, cred: str
) -> None:
    before = await db_snapshot(world.r, world.key_ids)
    call = getattr(world.r.stub, method)(GOOD[method](world), metadata=CREDENTIALS[cred](world))
    err = await rpc_error(call)
    assert err.code() == UNAUTH
    assert "key" in (err.details() or "")
    assert await db_snapshot(world.r, world.key_ids) == before
    await _server_still_answers(world)


async def test_revoked_key_is_unauthenticated(world: World) -> None:
    revoked = await world.r.new_key("to-revoke")
    assert await world.r.repo.revoke_api_key(await key_id_of(world.r, revoked))
    err = await rpc_error(get_session(world.r, world.sid, key=revoked))
    assert err.code() == UNAUTH


async def test_good_requests_of_the_credential_table_succeed(world: World) -> None:
    """Guards the table above: with the right key every one of those calls is accepted."""
    fresh = await build_world(world.r)  # these calls change things: not the shared world
    got = {
        method: await getattr(fresh.r.stub, method)(build(fresh), metadata=fresh.r.md())
        for method, build in GOOD.items()
    }
    made = got[CREATE]
    assert made.session.id.startswith("sess_")
    assert made.session.state == session_pb2.SESSION_STATE_CREATED
    assert made.access_token.startswith("pat_")
    assert got[GET].session.id == fresh.sid
    listed = {s.id for s in got[LIST].sessions}
    assert {made.session.id, fresh.sid} <= listed
    assert fresh.foreign_id not in listed
    assert (got[UPDATE].session.id, got[UPDATE].session.profile) == (fresh.sid, "p")
    # DisconnectSession of a PAUSED session is accepted and leaves it PAUSED.
    assert got[DISCONNECT].session.id == fresh.paused_id
    assert got[DISCONNECT].session.state == session_pb2.SESSION_STATE_PAUSED
    assert got[TERMINATE].session.id == fresh.sid
    assert got[TERMINATE].session.state == session_pb2.SESSION_STATE_TERMINATED
    assert [m.text for m in got[MESSAGES].messages] == ["hi", "well met"]
    # The key's usage since T0: none of another key's sessions, and a total that adds up.
    used = got[USAGE]
    assert fresh.foreign_id not in {u.session_id for u in used.sessions}
    assert ms_of(used.total_duration) == sum(ms_of(u.duration) for u in used.sessions)


# -- bytes that are not the request message ----------------------------------------------------

# A string field of each request holding the byte 0xFF, which is not UTF-8.
BAD_UTF8 = {
    CREATE: b"\x12\x01\xff",  # request_id
    GET: b"\x0a\x01\xff",  # session_id
    LIST: b"\x12\x01\xff",  # page_token
    UPDATE: b"\x0a\x03\x0a\x01\xff",  # session.id
    DISCONNECT: b"\x0a\x01\xff",  # session_id
    TERMINATE: b"\x0a\x01\xff",  # session_id
    MESSAGES: b"\x0a\x01\xff",  # session_id
    USAGE: b"\x1a\x01\xff",  # session_id
}
UNDECODABLE: dict[str, Callable[[str], bytes]] = {
    "truncated": lambda method: b"\x0a\x05\x12",  # field 1 claims 5 bytes, 1 follows
    "bad-wire-type": lambda method: b"\x0f\x01",  # wire type 7 does not exist
    "bad-utf8": lambda method: BAD_UTF8[method],
}


@pytest.mark.parametrize("payload", list(UNDECODABLE))
@pytest.mark.parametrize("method", list(GOOD))
async def test_undecodable_request_is_invalid_argument(
    world: World, method: str, payload: str
) -> None:
    before = await db_snapshot(world.r, world.key_ids)
    raw = world.r.channel.unary_unary(
        f"/parley.v1.SessionService/{method}",
        request_serializer=None,
        response_deserializer=None,
    )
    err = await rpc_error(raw(UNDECODABLE[payload](method), metadata=world.r.md()))
    assert err.code() == INVALID, err.details()
    assert bad_fields(err) == ["request"]
    assert await db_snapshot(world.r, world.key_ids) == before

    unauthenticated = await rpc_error(raw(UNDECODABLE[payload](method)))
    assert unauthenticated.code() == UNAUTH
    await _server_still_answers(world)


# -- templates that take long to render --------------------------------------------------------

# 5,000 x 5,000 empty loop turns: about a second of rendering on a laptop. Each range may be
# 100,000 long, so three nested loops in a 120-character situation would run for days.
SLOW_TEMPLATE = "{% for i in range(5000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}"


async def test_template_that_would_render_for_long_is_refused_before_it_runs(
    world: World,
) -> None:
    before = await db_snapshot(world.r, world.key_ids)
    err = await rpc_error(
        world.r.stub.CreateSession(
            pb.CreateSessionRequest(
                session=S(agent_id="npc", situation=SLOW_TEMPLATE, render_templates=True)
            ),
            metadata=world.r.md(),
        )
    )
    assert err.code() == INVALID
    assert bad_fields(err) == ["session.situation"]
    assert "loops may only go over scene" in (err.details() or "")
    assert await db_snapshot(world.r, world.key_ids) == before
