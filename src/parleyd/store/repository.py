"""Async repository over the tables: every read and write of parleyd's durable state.

State changes are compare-and-set on (id, version) inside one transaction, so two racing calls on
one session take effect exactly once, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

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
from parleyd.store.database import WRITE_OPTION, Database
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
    def __init__(self, db: Database) -> None:
        self._db = db
        self._engine = db.engine

    # -- transactions -------------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(**{WRITE_OPTION: True})
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            yield conn

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
        async with self._write() as conn:
            await conn.execute(
                API_KEYS.insert().values(
                    id=key.id,
                    name=name,
                    key_hash=secret_hash(plaintext),
                    max_session_duration_ms=max_session_duration_ms,
                    create_ms=now_ms,
                    revoked=False,
                )
            )
        return key, plaintext

    async def find_api_key(self, plaintext: str) -> ApiKey | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(API_KEYS).where(API_KEYS.c.key_hash == secret_hash(plaintext))
                )
            ).first()
        if row is None or row.revoked:
            return None
        return _to_api_key(row._mapping)

    async def list_api_keys(self) -> list[ApiKey]:
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(API_KEYS).order_by(API_KEYS.c.create_ms))).all()
        return [_to_api_key(r._mapping) for r in rows]

    async def revoke_api_key(self, key_id: str) -> bool:
        async with self._write() as conn:
            res = await conn.execute(
                API_KEYS.update().where(API_KEYS.c.id == key_id).values(revoked=True)
            )
        return res.rowcount == 1

    async def count_api_keys(self) -> int:
        async with self._read() as conn:
            return int(
                (await conn.execute(sa.select(sa.func.count()).select_from(API_KEYS))).scalar_one()
            )

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
        if request_id:
            earlier = await self._by_request_id(api_key_id, request_id)
            if earlier is not None:
                return earlier
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
        try:
            async with self._write() as conn:
                inherited: list[dict[str, Any]] = []
                if spec.continue_from_session_id:
                    inherited = await self._inheritable_history(
                        conn, api_key_id, spec.continue_from_session_id, spec.agent_id
                    )
                await conn.execute(SESSIONS.insert().values(**values))
                if spec.metadata:
                    await conn.execute(
                        LABELS.insert(),
                        [
                            {"session_id": session_id, "key": k, "value": v}
                            for k, v in spec.metadata.items()
                        ],
                    )
                if inherited:
                    for i, m in enumerate(inherited, start=1):
                        m["session_id"] = session_id
                        m["idx"] = i
                    await conn.execute(MESSAGES.insert(), inherited)
        except IntegrityError:
            # A concurrent retry with the same request_id won the insert: answer with its result.
            if request_id:
                earlier = await self._by_request_id(api_key_id, request_id)
                if earlier is not None:
                    return earlier
            raise
        return CreateOutcome(_to_session(values), True, request_fingerprint, token_sealed)

    async def _by_request_id(self, api_key_id: str, request_id: str) -> CreateOutcome | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(SESSIONS).where(
                        SESSIONS.c.api_key_id == api_key_id, SESSIONS.c.request_id == request_id
                    )
                )
            ).first()
        if row is None:
            return None
        m = row._mapping
        return CreateOutcome(_to_session(m), False, m["request_fingerprint"], m["token_sealed"])

    async def _inheritable_history(
        self, conn: AsyncConnection, api_key_id: str, parent_id: str, agent_id: str
    ) -> list[dict[str, Any]]:
        parent = (
            await conn.execute(
                sa.select(SESSIONS.c.id, SESSIONS.c.agent_id).where(
                    SESSIONS.c.id == parent_id, SESSIONS.c.api_key_id == api_key_id
                )
            )
        ).first()
        if parent is None:
            raise NotFound(f"continue_from_session_id: session {parent_id} not found")
        if parent.agent_id != agent_id:
            raise InvalidArgument.field(
                "session.continue_from_session_id",
                f"session {parent_id} talks to agent '{parent.agent_id}', not '{agent_id}'",
            )
        rows = (
            await conn.execute(
                sa.select(MESSAGES)
                .where(MESSAGES.c.session_id == parent_id)
                .order_by(MESSAGES.c.idx)
            )
        ).all()
        out = []
        for r in rows:
            m = dict(r._mapping)
            m["inherited_from_session_id"] = m["inherited_from_session_id"] or parent_id
            out.append(m)
        return out

    async def get_session(self, session_id: str, api_key_id: str | None = None) -> Session:
        """The session; NotFound when it does not exist or belongs to another key."""
        async with self._read() as conn:
            return await self._get(conn, session_id, api_key_id)

    async def get_session_by_token_hash(self, session_id: str, token_hash: str) -> Session | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(SESSIONS).where(
                        SESSIONS.c.id == session_id, SESSIONS.c.token_hash == token_hash
                    )
                )
            ).first()
        return None if row is None else _to_session(row._mapping)

    async def _get(self, conn: AsyncConnection, session_id: str, api_key_id: str | None) -> Session:
        query = sa.select(SESSIONS).where(SESSIONS.c.id == session_id)
        if api_key_id is not None:
            query = query.where(SESSIONS.c.api_key_id == api_key_id)
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"session {session_id} not found")
        return _to_session(row._mapping)

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
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [_to_session(r._mapping) for r in rows]

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
        async with self._write() as conn:
            res = await conn.execute(
                SESSIONS.update()
                .where(SESSIONS.c.id == session.id, SESSIONS.c.version == session.version)
                .values(**values)
            )
            if res.rowcount != 1:
                return None
            if "metadata" in values:
                await conn.execute(LABELS.delete().where(LABELS.c.session_id == session.id))
                if values["metadata"]:
                    await conn.execute(
                        LABELS.insert(),
                        [
                            {"session_id": session.id, "key": k, "value": v}
                            for k, v in values["metadata"].items()
                        ],
                    )
            return await self._get(conn, session.id, None)

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
        for _ in range(_CAS_ATTEMPTS):
            async with self._write() as conn:
                current = await self._get(conn, session_id, api_key_id)
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
                    return current, step
                values = _transition_values(current, step, now_ms, end_reason, active_until_ms)
                res = await conn.execute(
                    SESSIONS.update()
                    .where(SESSIONS.c.id == session_id, SESSIONS.c.version == current.version)
                    .values(**values)
                )
                if res.rowcount != 1:
                    continue
                if step.leaves_active:
                    await conn.execute(
                        USAGE.update()
                        .where(USAGE.c.session_id == session_id, USAGE.c.is_open.is_(True))
                        .values(end_ms=_close_at(current, now_ms, active_until_ms), is_open=False)
                    )
                if step.enters_active:
                    await conn.execute(
                        USAGE.insert().values(
                            session_id=session_id,
                            api_key_id=current.api_key_id,
                            start_ms=now_ms,
                            end_ms=now_ms,
                            is_open=True,
                        )
                    )
                return await self._get(conn, session_id, None), step
        raise RuntimeError(f"session {session_id}: state kept changing under {event.value}")

    async def heartbeat(self, session_ids: list[str], now_ms: int) -> None:
        """Extends the open usage intervals of live sessions to `now_ms`."""
        if not session_ids:
            return
        async with self._write() as conn:
            await conn.execute(
                USAGE.update()
                .where(USAGE.c.session_id.in_(session_ids), USAGE.c.is_open.is_(True))
                .values(end_ms=now_ms)
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
        async with self._read() as conn:
            return [_to_session(r._mapping) for r in (await conn.execute(query)).all()]

    async def sessions_in_state(self, state: SessionState, limit: int = 10_000) -> list[Session]:
        query = sa.select(SESSIONS).where(SESSIONS.c.state == state.value).limit(limit)
        async with self._read() as conn:
            return [_to_session(r._mapping) for r in (await conn.execute(query)).all()]

    async def last_heartbeat_ms(self, session_id: str) -> int | None:
        async with self._read() as conn:
            return cast(
                "int | None",
                (
                    await conn.execute(
                        sa.select(sa.func.max(USAGE.c.end_ms)).where(
                            USAGE.c.session_id == session_id, USAGE.c.is_open.is_(True)
                        )
                    )
                ).scalar_one_or_none(),
            )

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
        async with self._write() as conn:
            # Lock the session row: two appends that both read the same max(idx) would collide on
            # the primary key. (SQLite's BEGIN IMMEDIATE already serializes; FOR UPDATE is a no-op.)
            owner = (
                await conn.execute(
                    sa.select(SESSIONS.c.id).where(SESSIONS.c.id == session_id).with_for_update()
                )
            ).first()
            if owner is None:
                raise NotFound(f"session {session_id} not found")
            last = (
                await conn.execute(
                    sa.select(sa.func.max(MESSAGES.c.idx)).where(
                        MESSAGES.c.session_id == session_id
                    )
                )
            ).scalar_one_or_none()
            idx = int(last or 0) + 1
            await conn.execute(
                MESSAGES.insert().values(
                    session_id=session_id,
                    idx=idx,
                    role=role.value,
                    text=text,
                    interaction_id=interaction_id,
                    create_ms=now_ms,
                    interrupted=interrupted,
                    inherited_from_session_id="",
                )
            )
        return Message(session_id, idx, role, text, interaction_id, now_ms, interrupted)

    async def list_messages(
        self, session_id: str, api_key_id: str | None, *, after_index: int, limit: int
    ) -> list[Message]:
        async with self._read() as conn:
            await self._get(conn, session_id, api_key_id)
            rows = (
                await conn.execute(
                    sa.select(MESSAGES)
                    .where(MESSAGES.c.session_id == session_id, MESSAGES.c.idx > after_index)
                    .order_by(MESSAGES.c.idx)
                    .limit(limit)
                )
            ).all()
        return [_to_message(r._mapping) for r in rows]

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
            )
            .join(SESSIONS, SESSIONS.c.id == USAGE.c.session_id)
            .where(USAGE.c.api_key_id == api_key_id, USAGE.c.start_ms < end_ms)
        )
        if session_id:
            query = query.where(USAGE.c.session_id == session_id)
        async with self._read() as conn:
            if session_id:
                await self._get(conn, session_id, api_key_id)
            rows = (await conn.execute(query)).all()
        totals: dict[str, int] = {}
        agents: dict[str, str] = {}
        for r in rows:
            # An open interval of a session that is live right now runs to now.
            stop = now_ms if (r.is_open and r.state == SessionState.ACTIVE.value) else r.end_ms
            overlap = min(stop, end_ms) - max(r.start_ms, start_ms)
            if overlap > 0:
                totals[r.session_id] = totals.get(r.session_id, 0) + overlap
                agents[r.session_id] = r.agent_id
        return sorted(
            (SessionUsage(sid, agents[sid], ms) for sid, ms in totals.items()),
            key=lambda u: (-u.duration_ms, u.session_id),
        )


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
