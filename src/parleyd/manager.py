"""The session manager: every operation on stored sessions, on the domain rules and the store.

Transport-free: the gRPC servicer translates protobuf to these calls. The live side (hub, rooms,
transports, the built-in engine) uses only the narrow `live.SessionPort` this class implements —
admit by token, load, apply an event, append and load history, context and summary updates,
heartbeat, recover, the clock and transition observers — and never
the repository, which is private to this class. Observers registered with `on_transition` hear of
every state change, so live rooms can close streams when a session is disconnected, terminated or
expired.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from parleyd._periodic import every
from parleyd.domain import limits
from parleyd.domain.errors import InvalidArgument, Unauthenticated
from parleyd.domain.ids import (
    is_session_id,
    new_access_token,
    new_session_id,
    seal_token,
    secret_hash,
    unseal_token,
)
from parleyd.domain.lifecycle import (
    EndReason,
    SessionEvent,
    SessionState,
    Transition,
    ensure_joinable,
    transition,
)
from parleyd.domain.paging import decode_page_token, encode_page_token, filters_fingerprint
from parleyd.domain.session import (
    CREATE_FIELDS,
    ApiKey,
    KeyRevokedObserver,
    Message,
    MessageRole,
    SceneItem,
    Session,
    SessionSpec,
    SessionUsage,
    TransitionObserver,
    expiry_after_change,
)
from parleyd.domain.templates import render_situation
from parleyd.domain.validation import (
    check_session_id,
    metadata_violations,
    raise_if,
    spec_violations,
    utf8_length,
    word_count,
)
from parleyd.store.repository import Repository, SessionFilter

log = logging.getLogger("parleyd.manager")

T = TypeVar("T")
Clock = Callable[[], int]

_UPDATE_ATTEMPTS = 8
_KEY_CACHE_TTL_MS = 30_000
# How often this process looks for keys revoked by another one (`parleyd keys revoke`, another
# replica): a revocation takes effect everywhere within this, well under a second.
REVOCATION_POLL_MS = 250
# The history a live conversation reads back is bounded: the engine only keeps the last few turns.
_HISTORY_READ_MAX = 10_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class CreatedSession:
    session: Session
    access_token: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


class SessionManager:
    def __init__(
        self,
        repo: Repository,
        *,
        default_resume_window_ms: int = 300_000,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self._repo = repo
        self._default_resume_window_ms = default_resume_window_ms
        self._clock = clock
        self._observers: list[TransitionObserver] = []
        self._key_cache: dict[str, tuple[ApiKey, int]] = {}
        self._revoked: set[str] = set()
        self._revocation_observers: list[KeyRevokedObserver] = []

    def now_ms(self) -> int:
        return self._clock()

    def on_transition(self, observer: TransitionObserver) -> None:
        self._observers.append(observer)

    def on_key_revoked(self, observer: KeyRevokedObserver) -> None:
        """`observer(key_id)` hears of every key revoked, by this process or any other."""
        self._revocation_observers.append(observer)

    async def _notify(self, session: Session, step: Transition) -> None:
        for observer in self._observers:
            try:
                await observer(session, step)
            except Exception:  # an observer's failure must not undo a committed transition
                log.exception("transition observer failed for %s", session.id)

    # -- authentication -----------------------------------------------------------------------

    async def authenticate(self, api_key: str) -> ApiKey:
        """The API key record for a plaintext key; Unauthenticated when missing, unknown or revoked.

        Found keys are cached for 30 s, so a revocation takes effect within that time.
        """
        if not api_key:
            raise Unauthenticated("missing API key: send it in the 'x-api-key' metadata")
        now = self.now_ms()
        cached = self._key_cache.get(api_key)
        if cached is not None and cached[1] > now and cached[0].id not in self._revoked:
            return cached[0]
        key = await self._repo.find_api_key(api_key)
        if key is None or key.id in self._revoked:
            raise Unauthenticated("invalid API key")
        if len(self._key_cache) > 10_000:
            self._key_cache.clear()
        self._key_cache[api_key] = (key, now + _KEY_CACHE_TTL_MS)
        return key

    # -- sessions -----------------------------------------------------------------------------

    async def create_session(
        self, key: ApiKey, spec: SessionSpec, *, request_id: str, api_key_plaintext: str
    ) -> CreatedSession:
        if len(request_id) > limits.ID_FIELD_MAX_CHARS:
            raise InvalidArgument.field(
                "request_id", f"the limit is {limits.ID_FIELD_MAX_CHARS} characters"
            )
        if "\x00" in request_id:
            raise InvalidArgument.field("request_id", "must not contain NUL (U+0000) characters")
        raise_if(
            spec_violations(spec, CREATE_FIELDS, key_max_duration_ms=key.max_session_duration_ms)
        )
        rendered = render_situation(spec)
        _check_rendered(rendered)
        fingerprint = _fingerprint(spec) if request_id else None
        session_id = new_session_id()
        token = new_access_token()
        sealed = (
            seal_token(token, api_key_plaintext, request_id, session_id) if request_id else None
        )
        outcome = await self._repo.create_session(
            session_id=session_id,
            api_key_id=key.id,
            spec=spec,
            rendered_situation=rendered,
            max_duration_ms=spec.max_duration_ms or key.max_session_duration_ms,
            resume_window_ms=spec.resume_window_ms or self._default_resume_window_ms,
            token_hash=secret_hash(token),
            token_sealed=sealed,
            request_id=request_id or None,
            request_fingerprint=fingerprint,
            now_ms=self.now_ms(),
        )
        if outcome.created:
            return CreatedSession(outcome.session, token)
        # A retry of an earlier CreateSession: same body -> same session and token.
        if outcome.request_fingerprint != fingerprint or outcome.token_sealed is None:
            raise InvalidArgument.field(
                "request_id", "was already used with a different session body"
            )
        earlier_token = unseal_token(
            outcome.token_sealed, api_key_plaintext, request_id, outcome.session.id
        )
        return CreatedSession(outcome.session, earlier_token)

    async def get_session(self, key: ApiKey, session_id: str) -> Session:
        check_session_id(session_id)
        return await self._repo.get_session(session_id, key.id)

    async def list_sessions(
        self,
        key: ApiKey,
        *,
        page_size: int,
        page_token: str,
        state: SessionState | None,
        agent_id: str,
        user_id: str,
        metadata: Mapping[str, str],
    ) -> Page[Session]:
        size = _page_size(page_size, limits.SESSIONS_PAGE_DEFAULT, limits.SESSIONS_PAGE_MAX)
        raise_if(metadata_violations(dict(metadata), "metadata"))
        for name, value in (("agent_id", agent_id), ("user_id", user_id)):
            if len(value) > limits.ID_FIELD_MAX_CHARS:
                raise InvalidArgument.field(
                    name, f"the limit is {limits.ID_FIELD_MAX_CHARS} characters"
                )
            if "\x00" in value:  # PostgreSQL cannot compare text with NUL: refuse it by name
                raise InvalidArgument.field(name, "must not contain NUL (U+0000) characters")
        fp = filters_fingerprint(
            {
                "state": state.value if state else "",
                "agent_id": agent_id,
                "user_id": user_id,
                "metadata": dict(metadata),
            }
        )
        cursor = decode_page_token(page_token, "sessions", fp)
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidArgument.field("page_token", "is not a page token this call returned")
        flt = SessionFilter(state=state, agent_id=agent_id, user_id=user_id, metadata=metadata)
        rows = await self._repo.list_sessions(key.id, flt, before_id=cursor, limit=size + 1)
        return _page(rows, size, lambda last: encode_page_token("sessions", last.id, fp))

    async def update_session(
        self, key: ApiKey, session_id: str, changes: SessionSpec, paths: list[str]
    ) -> Session:
        """Applies the fields named in `paths` (already checked to be writable) from `changes`."""
        check_session_id(session_id, "session.id")
        raise_if(spec_violations(changes, paths, key_max_duration_ms=key.max_session_duration_ms))
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self._repo.get_session(session_id, key.id)
            transition(current.state, SessionEvent.UPDATE)  # ended -> FAILED_PRECONDITION
            merged = _merge(current, changes, paths)
            values = _column_values(changes, paths)
            if _TEMPLATE_INPUTS & set(paths):
                rendered = render_situation(merged)
                _check_rendered(rendered)
                values["rendered_situation"] = rendered
            if "max_duration" in paths or "resume_window" in paths:
                # A field named in the mask but left unset goes back to its default.
                max_ms = merged.max_duration_ms or key.max_session_duration_ms
                window_ms = merged.resume_window_ms or self._default_resume_window_ms
                values["max_duration_ms"] = max_ms
                values["resume_window_ms"] = window_ms
                values["expire_at_ms"] = expiry_after_change(
                    current, max_duration_ms=max_ms, resume_window_ms=window_ms
                )
            updated = await self._repo.update_session(current, values, now_ms=self.now_ms())
            if updated is not None:
                return updated
        raise RuntimeError(f"session {session_id} kept changing during UpdateSession")

    async def update_context(
        self,
        session_id: str,
        *,
        dynamic_info: str | None,
        scene: tuple[SceneItem, ...] | None,
    ) -> Session:
        """A live context change from Interact: the same rules as UpdateSession, no key needed."""
        changes = SessionSpec()
        paths: list[str] = []
        if dynamic_info is not None:
            changes.dynamic_info = dynamic_info
            paths.append("dynamic_info")
        if scene is not None:
            changes.scene = list(scene)
            paths.append("scene")
        current = await self._repo.get_session(session_id)
        if not paths:
            return current
        key = ApiKey(current.api_key_id, "", current.max_duration_ms, 0)
        return await self.update_session(key, session_id, changes, paths)

    async def set_summary(self, session_id: str, summary: str) -> Session:
        """The AI side's summary of the conversation (output only for callers)."""
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self._repo.get_session(session_id)
            updated = await self._repo.update_session(
                current, {"summary": summary[:4_096]}, now_ms=self.now_ms()
            )
            if updated is not None:
                return updated
        raise RuntimeError(f"session {session_id} kept changing while its summary was set")

    async def disconnect_session(self, key: ApiKey, session_id: str) -> Session:
        check_session_id(session_id)
        return await self.apply(session_id, SessionEvent.DISCONNECT, api_key_id=key.id)

    async def terminate_session(self, key: ApiKey, session_id: str) -> Session:
        check_session_id(session_id)
        return await self.apply(
            session_id, SessionEvent.TERMINATE, api_key_id=key.id, end_reason=EndReason.TERMINATED
        )

    async def apply(
        self,
        session_id: str,
        event: SessionEvent,
        *,
        api_key_id: str | None = None,
        end_reason: EndReason | None = None,
        active_until_ms: int | None = None,
        only_if_due: bool = False,
    ) -> Session:
        session, step = await self._repo.apply_event(
            session_id,
            event,
            now_ms=self.now_ms(),
            api_key_id=api_key_id,
            end_reason=end_reason,
            active_until_ms=active_until_ms,
            only_if_due=only_if_due,
        )
        if not step.noop:
            log.info(
                "session %s %s -> %s (%s)",
                session_id,
                step.source.value,
                step.target.value,
                event.value,
            )
            await self._notify(session, step)
        return session

    async def expire_due(self) -> list[Session]:
        """Expires every session whose resume window or max_duration has run out."""
        expired: list[Session] = []
        for s in await self._repo.sessions_due_to_expire(self.now_ms()):
            try:
                # Due-ness, reason and end of billing are re-read inside the transaction: the
                # session may have been resumed or extended since the query above.
                expired.append(await self.apply(s.id, SessionEvent.EXPIRE, only_if_due=True))
            except Exception as exc:  # raced with a join/terminate: the next sweep decides
                log.debug("not expiring %s: %s", s.id, exc)
        return expired

    async def run_expiry(self, interval_ms: int, stop: asyncio.Event) -> None:
        await every(interval_ms, stop, self.expire_due, "expiry sweep")

    # -- the live side's port (live.SessionPort) ------------------------------------------------

    async def admit(self, session_id: str, access_token: str) -> Session:
        """The session an access token opens, if it can still be joined.

        Unauthenticated when the token is missing or does not open `session_id` (a malformed id
        included: it cannot be told apart from a foreign one), or when the API key that created
        the session was revoked; FailedPrecondition when ended.
        """
        if not access_token:
            raise Unauthenticated("missing access token")
        session = None
        if is_session_id(session_id):
            session = await self._repo.get_session_by_token_hash(
                session_id, secret_hash(access_token)
            )
        if session is None:
            raise Unauthenticated(f"this access token does not open session {session_id}")
        if session.api_key_id in self._revoked:
            raise Unauthenticated(
                f"the API key that created session {session_id} was revoked: it can no longer "
                "be joined"
            )
        ensure_joinable(session.state)
        return session

    async def load(self, session_id: str) -> Session:
        """The session as stored now (no key check: the live side already admitted it)."""
        return await self._repo.get_session(session_id)

    async def append_message(
        self,
        session_id: str,
        role: MessageRole,
        text: str,
        interaction_id: str,
        *,
        interrupted: bool = False,
    ) -> None:
        await self._repo.append_message(
            session_id,
            role=role,
            text=text,
            interaction_id=interaction_id,
            now_ms=self.now_ms(),
            interrupted=interrupted,
        )

    async def load_history(self, session_id: str, *, last: int) -> list[Message]:
        """The last `last` messages of the conversation, oldest first."""
        messages = await self._repo.list_messages(
            session_id, None, after_index=0, limit=_HISTORY_READ_MAX
        )
        return messages[-last:] if last > 0 else []

    async def heartbeat(self, session_ids: Sequence[str]) -> None:
        """Usage of these live sessions is counted up to now, should this process die."""
        await self._repo.heartbeat(list(session_ids), self.now_ms())

    async def recover_orphans(self, *, live: Collection[str] = ()) -> list[str]:
        """Pauses sessions a dead process left ACTIVE; usage counts to their last heartbeat."""
        recovered = []
        for s in await self._repo.sessions_in_state(SessionState.ACTIVE):
            if s.id in live:
                continue
            last = await self._repo.last_heartbeat_ms(s.id)
            try:
                await self.apply(
                    s.id, SessionEvent.LEAVE, active_until_ms=last or s.active_since_ms
                )
                recovered.append(s.id)
            except Exception:
                log.exception("could not recover session %s", s.id)
        if recovered:
            log.info("paused sessions a previous process left ACTIVE", extra={"n": len(recovered)})
        return recovered

    # -- API keys -----------------------------------------------------------------------------

    async def create_api_key(
        self, *, name: str, max_session_duration_ms: int
    ) -> tuple[ApiKey, str]:
        """A new key and its plaintext, which is shown once and stored only as a hash."""
        return await self._repo.create_api_key(
            name=name, max_session_duration_ms=max_session_duration_ms, now_ms=self.now_ms()
        )

    async def list_api_keys(self) -> list[ApiKey]:
        return await self._repo.list_api_keys()

    async def revoke_api_key(self, key_id: str) -> bool:
        """Revokes a key: its calls and the joins of its sessions are refused from now on, and
        its sessions' live streams end (in this process at once, in others within
        REVOCATION_POLL_MS)."""
        revoked = await self._repo.revoke_api_key(key_id)
        if revoked:
            await self._revoked_now({key_id})
        return revoked

    async def load_revocations(self) -> None:
        """At start: the keys revoked so far (nothing is live yet, so nobody is told)."""
        self._revoked = await self._repo.revoked_key_ids()

    async def refresh_revocations(self) -> set[str]:
        """Picks up keys revoked by any process on this database; returns the new ones."""
        new = await self._repo.revoked_key_ids() - self._revoked
        if new:
            await self._revoked_now(new)
        return new

    async def run_revocation_watch(self, stop: asyncio.Event) -> None:
        await every(REVOCATION_POLL_MS, stop, self.refresh_revocations, "revocation check")

    async def _revoked_now(self, key_ids: set[str]) -> None:
        self._revoked |= key_ids
        # Cached copies go at once, whatever their TTL says.
        self._key_cache = {k: v for k, v in self._key_cache.items() if v[0].id not in key_ids}
        for key_id in sorted(key_ids):
            log.warning("API key %s revoked: its calls, joins and live streams are refused", key_id)
            for observer in self._revocation_observers:
                try:
                    await observer(key_id)
                except Exception:  # one observer's failure must not spare the others
                    log.exception("revocation observer failed for %s", key_id)

    async def session_history(self, session_id: str) -> tuple[Session, list[Message]]:
        """An operator's read of any session and its whole history, whatever its key's state
        (`parleyd sessions history`); never reachable over the network."""
        check_session_id(session_id)
        session = await self._repo.get_session(session_id)
        return session, await self._repo.list_messages(
            session_id, None, after_index=0, limit=_HISTORY_READ_MAX
        )

    async def count_api_keys(self) -> int:
        return await self._repo.count_api_keys()

    # -- history and usage --------------------------------------------------------------------

    async def list_messages(
        self, key: ApiKey, session_id: str, *, page_size: int, page_token: str
    ) -> Page[Message]:
        check_session_id(session_id)
        size = _page_size(page_size, limits.MESSAGES_PAGE_DEFAULT, limits.MESSAGES_PAGE_MAX)
        fp = filters_fingerprint({"session_id": session_id})
        cursor = decode_page_token(page_token, "messages", fp)
        if cursor is not None and not isinstance(cursor, int):
            raise InvalidArgument.field("page_token", "is not a page token this call returned")
        rows = await self._repo.list_messages(
            session_id, key.id, after_index=cursor or 0, limit=size + 1
        )
        return _page(rows, size, lambda last: encode_page_token("messages", last.index, fp))

    async def usage(
        self, key: ApiKey, *, start_ms: int | None, end_ms: int | None, session_id: str
    ) -> list[SessionUsage]:
        if start_ms is None:
            raise InvalidArgument.field("start_time", "is required")
        if end_ms is None:
            raise InvalidArgument.field("end_time", "is required")
        if end_ms <= start_ms:
            raise InvalidArgument.field("end_time", "must be after start_time")
        if session_id:
            check_session_id(session_id)
        return await self._repo.usage(
            key.id,
            start_ms=start_ms,
            end_ms=end_ms,
            now_ms=self.now_ms(),
            session_id=session_id or None,
        )


def _page(rows: list[T], size: int, token_after: Callable[[T], str]) -> Page[T]:
    """`rows` were read with one row more than `size`: that one tells whether a page follows."""
    if len(rows) <= size:
        return Page(rows, "")
    rows = rows[:size]
    return Page(rows, token_after(rows[-1]))


def _page_size(requested: int, default: int, maximum: int) -> int:
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)


def _check_rendered(rendered: str) -> None:
    size = utf8_length(rendered)  # before counting words: cheap, and bounds that work
    if size > limits.RENDERED_SITUATION_MAX_BYTES:
        raise InvalidArgument.field(
            "session.situation",
            f"renders to {size} bytes; the limit is {limits.RENDERED_SITUATION_MAX_BYTES} bytes",
        )
    words = word_count(rendered)
    if words > limits.SITUATION_MAX_WORDS:
        raise InvalidArgument.field(
            "session.situation",
            f"renders to {words} words; the limit is {limits.SITUATION_MAX_WORDS} words",
        )


def _fingerprint(spec: SessionSpec) -> str:
    blob = json.dumps(asdict(spec), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# Fields a situation template may read: changing one re-renders it.
_TEMPLATE_INPUTS = frozenset(
    {"situation", "metadata", "render_templates", "scene", "dynamic_info", "profile"}
)
_PATH_TO_ATTR = {"max_duration": "max_duration_ms", "resume_window": "resume_window_ms"}


def _merge(current: Session, changes: SessionSpec, paths: list[str]) -> SessionSpec:
    # Every spec field is also a Session attribute; copies, so the cached session stays as is.
    spec = SessionSpec(
        **{f.name: copy.copy(getattr(current, f.name)) for f in dataclasses.fields(SessionSpec)}
    )
    for path in paths:
        attr = _PATH_TO_ATTR.get(path, path)
        setattr(spec, attr, getattr(changes, attr))
    return spec


def _column_values(changes: SessionSpec, paths: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in paths:
        if path == "scene":
            values["scene"] = [
                {"name": s.name, "description": s.description} for s in changes.scene
            ]
        elif path == "metadata":
            values["metadata"] = dict(changes.metadata)
        elif path == "connection_type":
            values["connection_type"] = changes.connection_type.value
        elif path in _PATH_TO_ATTR:
            continue  # written with the recomputed expiry by the caller
        else:
            values[path] = getattr(changes, path)
    return values
