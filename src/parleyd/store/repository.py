"""Async repository over the tables: every read and write of parleyd's durable state.

Each operation is one plain synchronous function of a SQLAlchemy Core connection (the `_sql_*`
functions below), run by the database as one unit: `await db.read(fn)` / `await db.write(fn)`.
Statements are built once, at import, with bind parameters, so SQLAlchemy compiles each once.

State changes are compare-and-set on (id, version) inside one transaction, so two racing calls on
one session take effect exactly once, on SQLite and PostgreSQL alike.

With the session cache on (the default for SQLite, which one server process owns), point reads of
sessions are served from memory; every session write updates or evicts the cached copy once its
transaction has ended (see store.cache).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from parleyd.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from parleyd.domain.ids import new_api_key, secret_hash
from parleyd.domain.lifecycle import (
    LIVE_STATES,
    EndReason,
    SessionEvent,
    SessionState,
    Transition,
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
from parleyd.store.cache import Entry, SessionCache
from parleyd.store.database import Database, execute_dml
from parleyd.store.tables import (
    ApiKeyRow,
    MessageRow,
    SessionLabelRow,
    SessionRow,
    UsageIntervalRow,
)

SESSIONS = cast(sa.Table, SessionRow.__table__)  # type: ignore[attr-defined]
LABELS = cast(sa.Table, SessionLabelRow.__table__)  # type: ignore[attr-defined]
MESSAGES = cast(sa.Table, MessageRow.__table__)  # type: ignore[attr-defined]
USAGE = cast(sa.Table, UsageIntervalRow.__table__)  # type: ignore[attr-defined]
API_KEYS = cast(sa.Table, ApiKeyRow.__table__)  # type: ignore[attr-defined]

_CAS_ATTEMPTS = 8
DEFAULT_CACHE_CAPACITY = 10_000

R = TypeVar("R")

# Statements built once. Bind parameters named b_* stand for values in WHERE clauses; the
# columns an INSERT or UPDATE sets are the keys of the parameters it is executed with.
_SESSION_BY_ID = sa.select(SESSIONS).where(SESSIONS.c.id == sa.bindparam("b_id"))
_SESSION_BY_REQUEST = sa.select(SESSIONS).where(
    SESSIONS.c.api_key_id == sa.bindparam("b_key"),
    SESSIONS.c.request_id == sa.bindparam("b_request"),
)
_PARENT_OF = sa.select(SESSIONS.c.id, SESSIONS.c.agent_id).where(
    SESSIONS.c.id == sa.bindparam("b_id"), SESSIONS.c.api_key_id == sa.bindparam("b_key")
)
_INSERT_SESSION = SESSIONS.insert()
_UPDATE_SESSION_CAS = SESSIONS.update().where(
    SESSIONS.c.id == sa.bindparam("b_id"), SESSIONS.c.version == sa.bindparam("b_version")
)
_INSERT_LABELS = LABELS.insert()
_DELETE_LABELS = LABELS.delete().where(LABELS.c.session_id == sa.bindparam("b_id"))
_INSERT_MESSAGES = MESSAGES.insert()
_MESSAGES_OF = (
    sa.select(MESSAGES)
    .where(MESSAGES.c.session_id == sa.bindparam("b_id"))
    .order_by(MESSAGES.c.idx)
)
_MESSAGES_PAGE = (
    sa.select(MESSAGES)
    .where(MESSAGES.c.session_id == sa.bindparam("b_id"), MESSAGES.c.idx > sa.bindparam("b_after"))
    .order_by(MESSAGES.c.idx)
    .limit(sa.bindparam("b_limit"))
)
# Locks the session row: two appends that both read the same max(idx) would collide on the
# primary key. (SQLite has one writer anyway; FOR UPDATE renders as nothing there.)
_LOCK_SESSION = (
    sa.select(SESSIONS.c.id).where(SESSIONS.c.id == sa.bindparam("b_id")).with_for_update()
)
_LAST_MESSAGE_IDX = sa.select(sa.func.max(MESSAGES.c.idx)).where(
    MESSAGES.c.session_id == sa.bindparam("b_id")
)
_INSERT_USAGE = USAGE.insert()
_CLOSE_OPEN_USAGE = USAGE.update().where(
    USAGE.c.session_id == sa.bindparam("b_id"), USAGE.c.is_open.is_(True)
)
_EXTEND_OPEN_USAGE = USAGE.update().where(
    USAGE.c.session_id.in_(sa.bindparam("b_ids", expanding=True)), USAGE.c.is_open.is_(True)
)
_LAST_HEARTBEAT = sa.select(sa.func.max(USAGE.c.end_ms)).where(
    USAGE.c.session_id == sa.bindparam("b_id"), USAGE.c.is_open.is_(True)
)
_INSERT_API_KEY = API_KEYS.insert()
_API_KEY_BY_HASH = sa.select(API_KEYS).where(API_KEYS.c.key_hash == sa.bindparam("b_hash"))
_API_KEYS_BY_AGE = sa.select(API_KEYS).order_by(API_KEYS.c.create_ms)
_REVOKE_API_KEY = API_KEYS.update().where(API_KEYS.c.id == sa.bindparam("b_id"))
_COUNT_API_KEYS = sa.select(sa.func.count()).select_from(API_KEYS)
_REVOKED_KEY_IDS = sa.select(API_KEYS.c.id).where(API_KEYS.c.revoked == sa.true())


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    session: Session
    created: bool  # False: an earlier request with the same request_id made it
    request_fingerprint: str | None
    token_sealed: str | None


@dataclass(frozen=True, slots=True)
class SessionFilter:
    state: SessionState | None = None
    agent_id: str = ""
    user_id: str = ""
    metadata: Mapping[str, str] | None = None


class Repository:
    def __init__(
        self,
        db: Database,
        *,
        session_cache: bool | None = None,
        cache_capacity: int = DEFAULT_CACHE_CAPACITY,
    ) -> None:
        """`session_cache`: None (auto) turns it on for SQLite only. Turn it on only when this
        process is the only one that writes sessions to the database."""
        self._db = db
        self._engine = db.engine
        enabled = db.is_sqlite if session_cache is None else session_cache
        self._cache: SessionCache | None = SessionCache(cache_capacity) if enabled else None

    @property
    def session_cache(self) -> SessionCache | None:
        return self._cache

    # -- session cache plumbing ---------------------------------------------------------------

    async def _write_session(
        self, session_id: str, work: Callable[[Connection], R], written: Callable[[R], Entry | None]
    ) -> R:
        """A write of one session's row: the cache hears how it ended (see store.cache)."""
        cache = self._cache
        if cache is None:
            return await self._db.write(work)
        cache.write_started(session_id)

        def on_commit(result: R) -> None:
            cache.write_committed(session_id, written(result))

        def on_fail(_exc: BaseException) -> None:
            cache.write_failed(session_id)

        return await self._db.write(work, on_commit, on_fail)

    async def _entry(self, session_id: str) -> Entry | None:
        """The session and its token hash: from the cache, else from the database (and cached)."""
        cache = self._cache
        if cache is None:
            return await self._db.read(partial(_sql_load, session_id=session_id))
        entry = cache.get(session_id)
        if entry is not None:
            return entry
        ticket = cache.fill_start()
        try:
            entry = await self._db.read(partial(_sql_load, session_id=session_id))
        finally:
            cache.fill_end(ticket, entry)
        return entry

    def _owned_in_cache(self, session_id: str, api_key_id: str | None) -> bool:
        """True when the cache shows the session exists and belongs to `api_key_id`."""
        if self._cache is None:
            return False
        entry = self._cache.get(session_id)
        return entry is not None and (api_key_id is None or entry[0].api_key_id == api_key_id)

    # -- API keys -----------------------------------------------------------------------------

    async def create_api_key(
        self, *, name: str, max_session_duration_ms: int, now_ms: int
    ) -> tuple[ApiKey, str]:
        """Creates a key; returns it and its plaintext, which is never stored."""
        plaintext = new_api_key()
        key = ApiKey(
            id="key_" + secrets.token_hex(8),
            name=name,
            max_session_duration_ms=max_session_duration_ms,
            create_ms=now_ms,
        )
        row = {
            "id": key.id,
            "name": name,
            "key_hash": secret_hash(plaintext),
            "max_session_duration_ms": max_session_duration_ms,
            "create_ms": now_ms,
            "revoked": False,
        }
        await self._db.write(partial(_sql_execute, stmt=_INSERT_API_KEY, params=row))
        return key, plaintext

    async def find_api_key(self, plaintext: str) -> ApiKey | None:
        return await self._db.read(partial(_sql_find_api_key, key_hash=secret_hash(plaintext)))

    async def list_api_keys(self) -> list[ApiKey]:
        return await self._db.read(_sql_list_api_keys)

    async def revoke_api_key(self, key_id: str) -> bool:
        rowcount = await self._db.write(
            partial(_sql_execute, stmt=_REVOKE_API_KEY, params={"b_id": key_id, "revoked": True})
        )
        return rowcount == 1

    async def count_api_keys(self) -> int:
        return await self._db.read(_sql_count_api_keys)

    async def revoked_key_ids(self) -> set[str]:
        """Every revoked key's id (the table holds keys, not sessions: it stays small)."""
        return await self._db.read(_sql_revoked_key_ids)

    # -- sessions -----------------------------------------------------------------------------

    async def create_session(
        self,
        *,
        session_id: str,
        api_key_id: str,
        spec: SessionSpec,
        rendered_situation: str,
        max_duration_ms: int,
        resume_window_ms: int,
        token_hash: str,
        token_sealed: str | None,
        request_id: str | None,
        request_fingerprint: str | None,
        now_ms: int,
    ) -> CreateOutcome:
        values: dict[str, Any] = {
            "id": session_id,
            "api_key_id": api_key_id,
            "agent_id": spec.agent_id,
            "user_id": spec.user_id,
            "profile": spec.profile,
            "avatar_id": spec.avatar_id,
            "connection_type": spec.connection_type.value,
            "speaker_id": spec.speaker_id,
            "situation": spec.situation,
            "rendered_situation": rendered_situation,
            "dynamic_info": spec.dynamic_info,
            "scene": [{"name": s.name, "description": s.description} for s in spec.scene],
            "metadata": dict(spec.metadata),
            "max_duration_ms": max_duration_ms,
            "resume_window_ms": resume_window_ms,
            "continue_from_session_id": spec.continue_from_session_id,
            "render_templates": spec.render_templates,
            "state": SessionState.CREATED.value,
            "version": 1,
            "create_ms": now_ms,
            "update_ms": now_ms,
            "start_ms": None,
            "end_ms": None,
            "expire_at_ms": now_ms + resume_window_ms,
            "duration_ms": 0,
            "active_since_ms": None,
            "summary": "",
            "end_reason": None,
            "request_id": request_id or None,
            "request_fingerprint": request_fingerprint,
            "token_hash": token_hash,
            "token_sealed": token_sealed,
            "agent_mode": spec.agent_mode.value,
        }
        # What reading the row back would give (the session cache test holds the two equal).
        session = Session(
            id=session_id,
            api_key_id=api_key_id,
            agent_id=spec.agent_id,
            user_id=spec.user_id,
            profile=spec.profile,
            avatar_id=spec.avatar_id,
            connection_type=ConnectionType(spec.connection_type),
            speaker_id=spec.speaker_id,
            situation=spec.situation,
            rendered_situation=rendered_situation,
            dynamic_info=spec.dynamic_info,
            scene=[SceneItem(s.name, s.description) for s in spec.scene],
            metadata=dict(spec.metadata),
            max_duration_ms=max_duration_ms,
            resume_window_ms=resume_window_ms,
            continue_from_session_id=spec.continue_from_session_id,
            render_templates=bool(spec.render_templates),
            state=SessionState.CREATED,
            version=1,
            create_ms=now_ms,
            update_ms=now_ms,
            start_ms=None,
            end_ms=None,
            expire_at_ms=values["expire_at_ms"],
            duration_ms=0,
            active_since_ms=None,
            summary="",
            end_reason=None,
            agent_mode=AgentMode(spec.agent_mode),
        )
        created: Entry = (session, token_hash)
        work = partial(
            _sql_create_session,
            values=values,
            request_id=request_id or None,
            parent_id=spec.continue_from_session_id,
        )
        try:
            # None: created; else the outcome of an earlier request with the same request_id.
            earlier = await self._write_session(
                session_id, work, lambda e: created if e is None else None
            )
        except IntegrityError:
            # A concurrent retry with the same request_id won the insert: answer with its result.
            if request_id:
                earlier = await self._db.read(
                    partial(_sql_by_request_id, api_key_id=api_key_id, request_id=request_id)
                )
                if earlier is not None:
                    return earlier
            raise
        if earlier is not None:
            return earlier
        return CreateOutcome(session, True, request_fingerprint, token_sealed)

    async def get_session(self, session_id: str, api_key_id: str | None = None) -> Session:
        """The session; NotFound when it does not exist or belongs to another key.

        Another key's session and a session that does not exist take the same path — one
        database read — so neither the answer nor its timing tells them apart.
        """
        # The hot path: the owner's cache hit costs no coroutine.
        entry = self._cache.get(session_id) if self._cache is not None else None
        if entry is not None and (api_key_id is None or entry[0].api_key_id == api_key_id):
            return entry[0]
        if entry is None:
            entry = await self._entry(session_id)
        else:  # cached, but someone else's: read it anyway, as a miss would
            entry = await self._db.read(partial(_sql_load, session_id=session_id))
        if entry is None or (api_key_id is not None and entry[0].api_key_id != api_key_id):
            raise NotFound(f"session {session_id} not found")
        return entry[0]

    async def get_session_by_token_hash(self, session_id: str, token_hash: str) -> Session | None:
        entry = await self._entry(session_id)
        if entry is None or not secrets.compare_digest(entry[1].encode(), token_hash.encode()):
            return None
        return entry[0]

    async def list_sessions(
        self, api_key_id: str, flt: SessionFilter, *, before_id: str | None, limit: int
    ) -> list[Session]:
        """Newest first. Keyset paging on the time-sortable id keeps pages stable under inserts."""
        query = sa.select(SESSIONS).where(SESSIONS.c.api_key_id == api_key_id)
        if flt.state is not None:
            query = query.where(SESSIONS.c.state == flt.state.value)
        if flt.agent_id:
            query = query.where(SESSIONS.c.agent_id == flt.agent_id)
        if flt.user_id:
            query = query.where(SESSIONS.c.user_id == flt.user_id)
        for key, value in (flt.metadata or {}).items():
            query = query.where(
                sa.exists().where(
                    LABELS.c.session_id == SESSIONS.c.id,
                    LABELS.c.key == key,
                    LABELS.c.value == value,
                )
            )
        if before_id:
            query = query.where(SESSIONS.c.id < before_id)
        query = query.order_by(SESSIONS.c.id.desc()).limit(limit)
        return await self._db.read(partial(_sql_sessions, query=query))

    async def update_session(
        self,
        session: Session,
        values: dict[str, Any],
        *,
        now_ms: int,
    ) -> Session | None:
        """Writes `values` if `session` is still at its version; None when someone else won."""
        values = dict(values)
        values["update_ms"] = now_ms
        values["version"] = session.version + 1
        work = partial(
            _sql_update_session, session_id=session.id, version=session.version, values=values
        )
        entry = await self._write_session(session.id, work, _same)
        return None if entry is None else entry[0]

    async def apply_event(
        self,
        session_id: str,
        event: SessionEvent,
        *,
        now_ms: int,
        api_key_id: str | None = None,
        end_reason: EndReason | None = None,
        active_until_ms: int | None = None,
        only_if_due: bool = False,
    ) -> tuple[Session, Transition]:
        """Moves the session through the transition table, atomically.

        `active_until_ms` closes an ACTIVE interval earlier than now (crash recovery counts usage
        only up to the last heartbeat). `only_if_due` (the expiry sweep) re-checks, inside the
        transaction, that the session is still past its expiry, and takes the reason and the end
        of billing from the state it is in then. Raises NotFound or FailedPrecondition; changes
        nothing then.
        """
        work = partial(
            _sql_apply_event,
            session_id=session_id,
            event=event,
            now_ms=now_ms,
            api_key_id=api_key_id,
            end_reason=end_reason,
            active_until_ms=active_until_ms,
            only_if_due=only_if_due,
        )
        for _ in range(_CAS_ATTEMPTS):
            applied = await self._write_session(session_id, work, _applied_entry)
            if applied is not None:
                return applied[0], applied[1]
        raise RuntimeError(f"session {session_id}: state kept changing under {event.value}")

    async def heartbeat(self, session_ids: list[str], now_ms: int) -> None:
        """Extends the open usage intervals of live sessions to `now_ms`."""
        if not session_ids:
            return
        await self._db.write(
            partial(
                _sql_execute,
                stmt=_EXTEND_OPEN_USAGE,
                params={"b_ids": list(session_ids), "end_ms": now_ms},
            )
        )

    async def sessions_due_to_expire(self, now_ms: int, limit: int = 500) -> list[Session]:
        query = (
            sa.select(SESSIONS)
            .where(
                SESSIONS.c.state.in_([s.value for s in LIVE_STATES]),
                SESSIONS.c.expire_at_ms <= now_ms,
            )
            .limit(limit)
        )
        return await self._db.read(partial(_sql_sessions, query=query))

    async def sessions_in_state(self, state: SessionState, limit: int = 10_000) -> list[Session]:
        query = sa.select(SESSIONS).where(SESSIONS.c.state == state.value).limit(limit)
        return await self._db.read(partial(_sql_sessions, query=query))

    async def last_heartbeat_ms(self, session_id: str) -> int | None:
        return await self._db.read(partial(_sql_last_heartbeat, session_id=session_id))

    # -- messages -----------------------------------------------------------------------------

    async def append_message(
        self,
        session_id: str,
        *,
        role: MessageRole,
        text: str,
        interaction_id: str,
        now_ms: int,
        interrupted: bool = False,
    ) -> Message:
        row = {
            "session_id": session_id,
            "role": role.value,
            "text": text,
            "interaction_id": interaction_id,
            "create_ms": now_ms,
            "interrupted": interrupted,
            "inherited_from_session_id": "",
        }
        idx = await self._db.write(partial(_sql_append_message, row=row))
        return Message(session_id, idx, role, text, interaction_id, now_ms, interrupted)

    async def list_messages(
        self, session_id: str, api_key_id: str | None, *, after_index: int, limit: int
    ) -> list[Message]:
        return await self._db.read(
            partial(
                _sql_list_messages,
                session_id=session_id,
                api_key_id=api_key_id,
                check_owner=not self._owned_in_cache(session_id, api_key_id),
                after_index=after_index,
                limit=limit,
            )
        )

    # -- usage --------------------------------------------------------------------------------

    async def usage(
        self,
        api_key_id: str,
        *,
        start_ms: int,
        end_ms: int,
        now_ms: int,
        session_id: str | None = None,
    ) -> list[SessionUsage]:
        """ACTIVE time per session within [start_ms, end_ms), most used first."""
        query = (
            sa.select(
                USAGE.c.session_id,
                SESSIONS.c.agent_id,
                USAGE.c.start_ms,
                USAGE.c.end_ms,
                USAGE.c.is_open,
                SESSIONS.c.state,
                SESSIONS.c.expire_at_ms,
            )
            .join(SESSIONS, SESSIONS.c.id == USAGE.c.session_id)
            .where(USAGE.c.api_key_id == api_key_id, USAGE.c.start_ms < end_ms)
        )
        if session_id:
            query = query.where(USAGE.c.session_id == session_id)
        owner_check = None
        if session_id and not self._owned_in_cache(session_id, api_key_id):
            owner_check = (session_id, api_key_id)
        rows = await self._db.read(partial(_sql_usage_rows, query=query, owner_check=owner_check))
        totals: dict[str, int] = {}
        agents: dict[str, str] = {}
        for r in rows:
            # An open interval of a session that is live right now runs to now — but never past
            # the moment its max_duration runs out (expire_at_ms while ACTIVE), where billing
            # ends even before the expiry sweep notices.
            stop = r.end_ms
            if r.is_open and r.state == SessionState.ACTIVE.value:
                stop = now_ms if r.expire_at_ms is None else min(now_ms, r.expire_at_ms)
            overlap = min(stop, end_ms) - max(r.start_ms, start_ms)
            if overlap > 0:
                totals[r.session_id] = totals.get(r.session_id, 0) + overlap
                agents[r.session_id] = r.agent_id
        return sorted(
            (SessionUsage(sid, agents[sid], ms) for sid, ms in totals.items()),
            key=lambda u: (-u.duration_ms, u.session_id),
        )


def _same(entry: Entry | None) -> Entry | None:
    return entry


def _applied_entry(applied: tuple[Session, Transition, Entry | None] | None) -> Entry | None:
    return None if applied is None else applied[2]


# -- the units of work: plain functions of a Core connection, run by Database.read/write ---------


def _sql_execute(conn: Connection, *, stmt: Any, params: dict[str, Any]) -> int:
    return int(conn.execute(stmt, params).rowcount)


def _sql_find_api_key(conn: Connection, *, key_hash: str) -> ApiKey | None:
    row = conn.execute(_API_KEY_BY_HASH, {"b_hash": key_hash}).first()
    if row is None or row.revoked:
        return None
    return _to_api_key(row._mapping)


def _sql_list_api_keys(conn: Connection) -> list[ApiKey]:
    return [_to_api_key(r._mapping) for r in conn.execute(_API_KEYS_BY_AGE)]


def _sql_revoked_key_ids(conn: Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute(_REVOKED_KEY_IDS)}


def _sql_count_api_keys(conn: Connection) -> int:
    return int(conn.execute(_COUNT_API_KEYS).scalar_one())


def _sql_load(conn: Connection, *, session_id: str) -> Entry | None:
    row = conn.execute(_SESSION_BY_ID, {"b_id": session_id}).first()
    if row is None:
        return None
    m = row._mapping
    return _to_session(m), m["token_hash"]


def _sql_sessions(conn: Connection, *, query: Any) -> list[Session]:
    return [_to_session(r._mapping) for r in conn.execute(query)]


def _sql_by_request_id(
    conn: Connection, *, api_key_id: str, request_id: str
) -> CreateOutcome | None:
    row = conn.execute(_SESSION_BY_REQUEST, {"b_key": api_key_id, "b_request": request_id}).first()
    if row is None:
        return None
    m = row._mapping
    return CreateOutcome(_to_session(m), False, m["request_fingerprint"], m["token_sealed"])


def _sql_create_session(
    conn: Connection, *, values: dict[str, Any], request_id: str | None, parent_id: str
) -> CreateOutcome | None:
    """Inserts the session (None), or returns an earlier one made with the same request_id."""
    if request_id:
        earlier = _sql_by_request_id(conn, api_key_id=values["api_key_id"], request_id=request_id)
        if earlier is not None:
            return earlier
    inherited: list[dict[str, Any]] = []
    if parent_id:
        inherited = _inheritable_history(conn, values["api_key_id"], parent_id, values["agent_id"])
    execute_dml(conn, _INSERT_SESSION, values)
    session_id = values["id"]
    metadata: dict[str, str] = values["metadata"]
    if metadata:
        execute_dml(
            conn,
            _INSERT_LABELS,
            [{"session_id": session_id, "key": k, "value": v} for k, v in metadata.items()],
        )
    if inherited:
        for i, m in enumerate(inherited, start=1):
            m["session_id"] = session_id
            m["idx"] = i
        conn.execute(_INSERT_MESSAGES, inherited)
    return None


def _inheritable_history(
    conn: Connection, api_key_id: str, parent_id: str, agent_id: str
) -> list[dict[str, Any]]:
    parent = conn.execute(_PARENT_OF, {"b_id": parent_id, "b_key": api_key_id}).first()
    if parent is None:
        raise NotFound(f"continue_from_session_id: session {parent_id} not found")
    if parent.agent_id != agent_id:
        raise InvalidArgument.field(
            "session.continue_from_session_id",
            f"session {parent_id} talks to agent '{parent.agent_id}', not '{agent_id}'",
        )
    out = []
    for r in conn.execute(_MESSAGES_OF, {"b_id": parent_id}):
        m = dict(r._mapping)
        m["inherited_from_session_id"] = m["inherited_from_session_id"] or parent_id
        out.append(m)
    return out


def _sql_update_session(
    conn: Connection, *, session_id: str, version: int, values: dict[str, Any]
) -> Entry | None:
    res = conn.execute(_UPDATE_SESSION_CAS, {**values, "b_id": session_id, "b_version": version})
    if res.rowcount != 1:
        return None
    if "metadata" in values:
        conn.execute(_DELETE_LABELS, {"b_id": session_id})
        if values["metadata"]:
            conn.execute(
                _INSERT_LABELS,
                [
                    {"session_id": session_id, "key": k, "value": v}
                    for k, v in values["metadata"].items()
                ],
            )
    return _sql_load(conn, session_id=session_id)


def _sql_apply_event(
    conn: Connection,
    *,
    session_id: str,
    event: SessionEvent,
    now_ms: int,
    api_key_id: str | None,
    end_reason: EndReason | None,
    active_until_ms: int | None,
    only_if_due: bool,
) -> tuple[Session, Transition, Entry | None] | None:
    """One compare-and-set attempt: (session, step, what was written), or None to try again."""
    loaded = _sql_load(conn, session_id=session_id)
    if loaded is None or (api_key_id is not None and loaded[0].api_key_id != api_key_id):
        raise NotFound(f"session {session_id} not found")
    current = loaded[0]
    if only_if_due:
        if current.expire_at_ms is None or current.expire_at_ms > now_ms:
            raise FailedPrecondition(f"session {session_id} is not due to expire")
        if current.state == SessionState.ACTIVE:
            end_reason = EndReason.MAX_DURATION
            # max_duration ran out at expire_at_ms, not when the sweep noticed.
            active_until_ms = current.expire_at_ms
        else:
            end_reason = EndReason.RESUME_WINDOW
    step = transition(current.state, event)
    if step.noop:
        return current, step, None
    values = _transition_values(current, step, now_ms, end_reason, active_until_ms)
    res = conn.execute(
        _UPDATE_SESSION_CAS, {**values, "b_id": session_id, "b_version": current.version}
    )
    if res.rowcount != 1:
        return None
    if step.leaves_active:
        conn.execute(
            _CLOSE_OPEN_USAGE,
            {
                "b_id": session_id,
                "end_ms": _close_at(current, now_ms, active_until_ms),
                "is_open": False,
            },
        )
    if step.enters_active:
        conn.execute(
            _INSERT_USAGE,
            {
                "session_id": session_id,
                "api_key_id": current.api_key_id,
                "start_ms": now_ms,
                "end_ms": now_ms,
                "is_open": True,
            },
        )
    written = _sql_load(conn, session_id=session_id)
    assert written is not None
    return written[0], step, written


def _sql_last_heartbeat(conn: Connection, *, session_id: str) -> int | None:
    last = conn.execute(_LAST_HEARTBEAT, {"b_id": session_id}).scalar_one_or_none()
    return cast("int | None", last)


def _sql_append_message(conn: Connection, *, row: dict[str, Any]) -> int:
    session_id = row["session_id"]
    if conn.execute(_LOCK_SESSION, {"b_id": session_id}).first() is None:
        raise NotFound(f"session {session_id} not found")
    last = conn.execute(_LAST_MESSAGE_IDX, {"b_id": session_id}).scalar_one_or_none()
    idx = int(last or 0) + 1
    conn.execute(_INSERT_MESSAGES, {**row, "idx": idx})
    return idx


def _check_owner(conn: Connection, session_id: str, api_key_id: str | None) -> None:
    loaded = _sql_load(conn, session_id=session_id)
    if loaded is None or (api_key_id is not None and loaded[0].api_key_id != api_key_id):
        raise NotFound(f"session {session_id} not found")


def _sql_list_messages(
    conn: Connection,
    *,
    session_id: str,
    api_key_id: str | None,
    check_owner: bool,
    after_index: int,
    limit: int,
) -> list[Message]:
    if check_owner:
        _check_owner(conn, session_id, api_key_id)
    rows = conn.execute(
        _MESSAGES_PAGE, {"b_id": session_id, "b_after": after_index, "b_limit": limit}
    )
    return [_to_message(r._mapping) for r in rows]


def _sql_usage_rows(
    conn: Connection, *, query: Any, owner_check: tuple[str, str] | None
) -> list[Any]:
    if owner_check is not None:
        _check_owner(conn, *owner_check)
    return list(conn.execute(query).all())


def _close_at(current: Session, now_ms: int, active_until_ms: int | None) -> int:
    if active_until_ms is None:
        return now_ms
    since = current.active_since_ms if current.active_since_ms is not None else active_until_ms
    return max(since, min(now_ms, active_until_ms))


def _transition_values(
    current: Session,
    step: Transition,
    now_ms: int,
    end_reason: EndReason | None,
    active_until_ms: int | None,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "state": step.target.value,
        "version": current.version + 1,
        "update_ms": now_ms,
    }
    duration = current.duration_ms
    if step.leaves_active:
        since = current.active_since_ms if current.active_since_ms is not None else now_ms
        duration += max(0, _close_at(current, now_ms, active_until_ms) - since)
        values["duration_ms"] = duration
        values["active_since_ms"] = None
    if step.enters_active:
        values["active_since_ms"] = now_ms
        if current.start_ms is None:
            values["start_ms"] = now_ms
        values["expire_at_ms"] = now_ms + max(0, current.max_duration_ms - duration)
    elif step.target == SessionState.PAUSED:
        values["expire_at_ms"] = now_ms + current.resume_window_ms
    elif step.target.ended:
        values["end_ms"] = now_ms
        values["expire_at_ms"] = now_ms if step.target == SessionState.EXPIRED else None
        if end_reason is None:
            if step.target == SessionState.TERMINATED:
                end_reason = EndReason.TERMINATED
            elif step.source == SessionState.ACTIVE:
                end_reason = EndReason.MAX_DURATION  # only max_duration runs out while ACTIVE
            else:
                end_reason = EndReason.RESUME_WINDOW
        values["end_reason"] = end_reason.value
    return values


def _to_api_key(m: Any) -> ApiKey:
    return ApiKey(
        id=m["id"],
        name=m["name"],
        max_session_duration_ms=int(m["max_session_duration_ms"]),
        create_ms=int(m["create_ms"]),
        revoked=bool(m["revoked"]),
    )


def _to_session(m: Any) -> Session:
    return Session(
        id=m["id"],
        api_key_id=m["api_key_id"],
        agent_id=m["agent_id"],
        user_id=m["user_id"],
        profile=m["profile"],
        avatar_id=m["avatar_id"],
        connection_type=ConnectionType(m["connection_type"]),
        speaker_id=m["speaker_id"],
        situation=m["situation"],
        rendered_situation=m["rendered_situation"],
        dynamic_info=m["dynamic_info"],
        scene=[SceneItem(s["name"], s.get("description", "")) for s in m["scene"] or []],
        metadata=dict(m["metadata"] or {}),
        max_duration_ms=int(m["max_duration_ms"]),
        resume_window_ms=int(m["resume_window_ms"]),
        continue_from_session_id=m["continue_from_session_id"],
        render_templates=bool(m["render_templates"]),
        state=SessionState(m["state"]),
        version=int(m["version"]),
        create_ms=int(m["create_ms"]),
        update_ms=int(m["update_ms"]),
        start_ms=m["start_ms"],
        end_ms=m["end_ms"],
        expire_at_ms=m["expire_at_ms"],
        duration_ms=int(m["duration_ms"]),
        active_since_ms=m["active_since_ms"],
        summary=m["summary"],
        end_reason=EndReason(m["end_reason"]) if m["end_reason"] else None,
        agent_mode=AgentMode(m["agent_mode"]),
    )


def _to_message(m: Any) -> Message:
    return Message(
        session_id=m["session_id"],
        index=int(m["idx"]),
        role=MessageRole(m["role"]),
        text=m["text"],
        interaction_id=m["interaction_id"],
        create_ms=int(m["create_ms"]),
        interrupted=bool(m["interrupted"]),
        inherited_from_session_id=m["inherited_from_session_id"],
    )
