"""Fixtures of the store tests (with `db` and `repo` from tests/conftest.py)."""

from __future__ import annotations

import secrets

import pytest

from parleyd.domain.session import ApiKey
from parleyd.store import Repository
from tests.support.store import T0


@pytest.fixture
async def key(repo: Repository) -> ApiKey:
    """An API key of the test's own: it sees only the sessions the test makes (the PostgreSQL
    database is shared by the whole run). Uses the test module's `repo`."""
    k, _ = await repo.create_api_key(
        name=f"test-{secrets.token_hex(3)}", max_session_duration_ms=3_600_000, now_ms=T0
    )
    return k
