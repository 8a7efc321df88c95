"""Settings of the live side, filled from the server's `config.Settings` by the composition root."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LiveSettings:
    max_users: int = 1
    outbox_capacity: int = 256
    pause_grace_ms: int = 500
    agent_wait_timeout_ms: int = 30_000
    expiring_lead_ms: int = 30_000
    heartbeat_interval_ms: int = 2_000
