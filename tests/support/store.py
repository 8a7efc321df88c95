"""Repository tests' data: a fixed clock, session ids made to order, and sessions made directly.

Time is explicit (`now_ms`) in these tests, so durations and expiry are exact.
"""

from __future__ import annotations

import os

from ulid import ULID

from parleyd.domain.ids import new_access_token, secret_hash
from parleyd.domain.session import ApiKey, Session, SessionSpec
from parleyd.store import Repository
from parleyd.store.repository import CreateOutcome

T0 = 1_700_000_000_000  # a fixed "now" (2023-11-14), in epoch milliseconds
MAX_MS = 600_000
WINDOW_MS = 60_000

_last_ms = 0


def new_id(ms: int | None = None) -> str:
    """A session id whose ULID time is `ms`, or one strictly newer than the previous id made here.

    Real ids order by millisecond only (within one ms their order is random), so tests that check
    "newest first" make ids a millisecond apart.
    """
    global _last_ms
    if ms is None:
        _last_ms = max(_last_ms + 1, T0)
        ms = _last_ms
    return "sess_" + str(ULID.from_bytes(ms.to_bytes(6, "big") + os.urandom(10)))


async def create(
    repo: Repository,
    key: ApiKey,
    spec: SessionSpec | None = None,
    *,
    now_ms: int = T0,
    session_id: str | None = None,
    request_id: str | None = None,
    token: str | None = None,
    max_duration_ms: int = MAX_MS,
    resume_window_ms: int = WINDOW_MS,
) -> CreateOutcome:
    spec = spec or SessionSpec(agent_id="npc")
    return await repo.create_session(
        session_id=session_id or new_id(),
        api_key_id=key.id,
        spec=spec,
        rendered_situation=spec.situation.upper(),
        max_duration_ms=max_duration_ms,
        resume_window_ms=resume_window_ms,
        token_hash=secret_hash(token or new_access_token()),
        token_sealed=("ab" * 40) if request_id else None,
        request_id=request_id,
        request_fingerprint=("fp-" + request_id) if request_id else None,
        now_ms=now_ms,
    )


async def new_session(repo: Repository, key: ApiKey, **kw: object) -> Session:
    return (await create(repo, key, **kw)).session  # type: ignore[arg-type]
