"""SQLModel tables. Times are UTC epoch milliseconds (BIGINT): portable and cheap to compare.

Migrations in `migrations/versions` create exactly these tables; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


class ApiKeyRow(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=128)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    max_session_duration_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    create_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    revoked: bool = Field(default=False)


class SessionRow(SQLModel, table=True):
    __tablename__ = "sessions"
    __table_args__ = (
        UniqueConstraint("api_key_id", "request_id", name="uq_sessions_key_request"),
        Index("ix_sessions_key_id", "api_key_id", "id"),
        Index("ix_sessions_state_expire", "state", "expire_at_ms"),
    )

    id: str = Field(primary_key=True, max_length=31)
    api_key_id: str = Field(max_length=40, foreign_key="api_keys.id")
    agent_id: str = Field(max_length=128)
    user_id: str = Field(default="", max_length=128)
    profile: str = Field(default="", max_length=128)
    avatar_id: str = Field(default="", max_length=128)
    connection_type: str = Field(default="audio", max_length=16)
    speaker_id: str = Field(default="", max_length=128)
    situation: str = Field(default="")
    rendered_situation: str = Field(default="")
    dynamic_info: str = Field(default="")
    scene: list[dict[str, str]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    meta: dict[str, str] = Field(
        default_factory=dict, sa_column=Column("metadata", JSON, nullable=False)
    )
    max_duration_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    resume_window_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    continue_from_session_id: str = Field(default="", max_length=31)
    render_templates: bool = Field(default=False)
    state: str = Field(max_length=16)
    version: int = Field(default=1)
    create_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    update_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    start_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    end_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    expire_at_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    duration_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    active_since_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    summary: str = Field(default="")
    end_reason: str | None = Field(default=None, max_length=16)
    request_id: str | None = Field(default=None, max_length=128)
    request_fingerprint: str | None = Field(default=None, max_length=64)
    token_hash: str = Field(max_length=64, index=True)
    # The access token sealed for idempotent replays of CreateSession (see domain.ids.seal_token).
    token_sealed: str | None = Field(default=None, max_length=256)
    # server_default as in migration 0002, which needs it to add the column to existing rows.
    agent_mode: str = Field(
        default="builtin", max_length=16, sa_column_kwargs={"server_default": "builtin"}
    )


class SessionLabelRow(SQLModel, table=True):
    """One metadata pair of a session, so ListSessions can filter by metadata on any database."""

    __tablename__ = "session_labels"
    __table_args__ = (Index("ix_session_labels_kv", "key", "value", "session_id"),)

    session_id: str = Field(primary_key=True, max_length=31, foreign_key="sessions.id")
    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=512)


class MessageRow(SQLModel, table=True):
    __tablename__ = "messages"

    session_id: str = Field(primary_key=True, max_length=31, foreign_key="sessions.id")
    idx: int = Field(primary_key=True)
    role: str = Field(max_length=16)
    text: str = Field(default="")
    interaction_id: str = Field(default="", max_length=64)
    create_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    interrupted: bool = Field(default=False)
    inherited_from_session_id: str = Field(default="", max_length=31)


class UsageIntervalRow(SQLModel, table=True):
    """One stretch of ACTIVE time. The open one (is_open) is extended by heartbeats."""

    __tablename__ = "usage_intervals"
    __table_args__ = (
        Index("ix_usage_key_time", "api_key_id", "start_ms", "end_ms"),
        Index("ix_usage_session", "session_id", "start_ms"),
    )

    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(max_length=31, foreign_key="sessions.id")
    api_key_id: str = Field(max_length=40)
    start_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    end_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    is_open: bool = Field(default=True)
