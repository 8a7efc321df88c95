"""Initial schema: api_keys, sessions, session_labels, messages, usage_intervals.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("max_session_duration_ms", sa.BigInteger, nullable=False),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
    )
    op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)

    op.create_table(
        "sessions",
        sa.Column("id", sa.String(31), primary_key=True),
        sa.Column("api_key_id", sa.String(40), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("profile", sa.String(128), nullable=False),
        sa.Column("avatar_id", sa.String(128), nullable=False),
        sa.Column("connection_type", sa.String(16), nullable=False),
        sa.Column("speaker_id", sa.String(128), nullable=False),
        sa.Column("situation", sa.String, nullable=False),
        sa.Column("rendered_situation", sa.String, nullable=False),
        sa.Column("dynamic_info", sa.String, nullable=False),
        sa.Column("scene", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("max_duration_ms", sa.BigInteger, nullable=False),
        sa.Column("resume_window_ms", sa.BigInteger, nullable=False),
        sa.Column("continue_from_session_id", sa.String(31), nullable=False),
        sa.Column("render_templates", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sa.Column("update_ms", sa.BigInteger, nullable=False),
        sa.Column("start_ms", sa.BigInteger, nullable=True),
        sa.Column("end_ms", sa.BigInteger, nullable=True),
        sa.Column("expire_at_ms", sa.BigInteger, nullable=True),
        sa.Column("duration_ms", sa.BigInteger, nullable=False),
        sa.Column("active_since_ms", sa.BigInteger, nullable=True),
        sa.Column("summary", sa.String, nullable=False),
        sa.Column("end_reason", sa.String(16), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("request_fingerprint", sa.String(64), nullable=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("token_sealed", sa.String(256), nullable=True),
        sa.UniqueConstraint("api_key_id", "request_id", name="uq_sessions_key_request"),
    )
    op.create_index("ix_sessions_key_id", "sessions", ["api_key_id", "id"])
    op.create_index("ix_sessions_state_expire", "sessions", ["state", "expire_at_ms"])
    op.create_index("ix_sessions_token_hash", "sessions", ["token_hash"])

    op.create_table(
        "session_labels",
        sa.Column("session_id", sa.String(31), sa.ForeignKey("sessions.id"), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(512), nullable=False),
    )
    op.create_index("ix_session_labels_kv", "session_labels", ["key", "value", "session_id"])

    op.create_table(
        "messages",
        sa.Column("session_id", sa.String(31), sa.ForeignKey("sessions.id"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("text", sa.String, nullable=False),
        sa.Column("interaction_id", sa.String(64), nullable=False),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sa.Column("interrupted", sa.Boolean, nullable=False),
        sa.Column("inherited_from_session_id", sa.String(31), nullable=False),
    )

    op.create_table(
        "usage_intervals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(31), sa.ForeignKey("sessions.id"), nullable=False),
        sa.Column("api_key_id", sa.String(40), nullable=False),
        sa.Column("start_ms", sa.BigInteger, nullable=False),
        sa.Column("end_ms", sa.BigInteger, nullable=False),
        sa.Column("is_open", sa.Boolean, nullable=False),
    )
    op.create_index("ix_usage_key_time", "usage_intervals", ["api_key_id", "start_ms", "end_ms"])
    op.create_index("ix_usage_session", "usage_intervals", ["session_id", "start_ms"])


def downgrade() -> None:
    op.drop_table("usage_intervals")
    op.drop_table("messages")
    op.drop_table("session_labels")
    op.drop_table("sessions")
    op.drop_table("api_keys")
