"""Durable storage of sessions, messages, usage and API keys (SQLModel on SQLite or PostgreSQL)."""

from parleyd.store.database import Database, open_database
from parleyd.store.repository import Repository

__all__ = ["Database", "Repository", "open_database"]
