"""Settings of `parleyd serve`: every one is a command-line flag and a PARLEYD_* variable.

The README's configuration table is generated from SETTINGS, so the two never disagree.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from parleyd.domain.durations import parse_duration_ms


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: str
    help: str
    kind: type = str

    @property
    def env(self) -> str:
        return "PARLEYD_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "Address the gRPC server listens on."),
    Setting("port", "50051", "gRPC port (0 picks a free one).", int),
    Setting(
        "database_url",
        "sqlite+aiosqlite:///./parleyd.db",
        "SQLAlchemy URL: sqlite+aiosqlite:///FILE or postgresql+asyncpg://USER@HOST/DB.",
    ),
    Setting(
        "public_grpc_target",
        "",
        "host:port clients are told to connect to (CreateSession.connect); default host:port.",
    ),
    Setting(
        "http_port",
        "8080",
        "HTTP port of the WebRTC bridge (signalling and demo page), on the same host (0 picks a "
        "free one).",
        int,
    ),
    Setting(
        "public_http_url",
        "",
        "Base URL browsers are told to use (CreateSession.connect.webrtc_signaling_url); "
        "default http://host:http_port.",
    ),
    Setting(
        "http_max_connections",
        "256",
        "Open HTTP connections the bridge accepts; past it a new one first closes the oldest that "
        "has not sent a complete request, else it is answered 429.",
        int,
    ),
    Setting(
        "http_header_timeout",
        "5s",
        "How long an HTTP connection may take to send a request's headers (after it opens, or "
        "after its last response) before it is closed.",
    ),
    Setting(
        "ice_servers",
        "",
        "Comma-separated STUN/TURN URLs for the WebRTC bridge (turn:USER:PASSWORD@HOST:PORT); "
        "empty: host candidates only.",
    ),
    Setting(
        "webrtc_host_addresses",
        "",
        "Comma-separated host addresses the WebRTC bridge offers (e.g. 127.0.0.1); empty: every "
        "interface address but loopback.",
    ),
    Setting(
        "webrtc_connect_timeout",
        "20s",
        "How long a WebRTC peer may take to connect after its offer was answered.",
    ),
    Setting(
        "webrtc_max_peers_per_session",
        "4",
        "WebRTC peers (connected or connecting) one session may have; further offers are refused "
        "RESOURCE_EXHAUSTED.",
        int,
    ),
    Setting(
        "webrtc_max_peers_per_key",
        "32",
        "WebRTC peers (connected or connecting) all sessions of one API key may have; further "
        "offers are refused RESOURCE_EXHAUSTED.",
        int,
    ),
    Setting(
        "default_resume_window",
        "5m",
        "How long a CREATED or PAUSED session waits for a user before it expires.",
    ),
    Setting(
        "dev_key_max_session_duration",
        "1h",
        "max_duration limit of the development key made on first start of an empty database.",
    ),
    Setting("expiry_interval", "1s", "How often sessions past their expiry are expired."),
    Setting(
        "sqlite_synchronous",
        "NORMAL",
        "SQLite PRAGMA synchronous: NORMAL (fast; the last commits can be lost if the machine or "
        "its disk fails) or FULL (every commit survives that, at some cost per write).",
    ),
    Setting(
        "session_cache",
        "auto",
        "Serve session reads from memory, kept in step with every write: auto (on for SQLite, "
        "off for PostgreSQL), on (only if this is the one server writing to the database) or off.",
    ),
    Setting("drain_timeout", "10s", "Grace period for in-flight calls on SIGTERM/SIGINT."),
    Setting(
        "pause_grace",
        "500ms",
        "How long after the last USER leaves (or its stream drops) the session is PAUSED.",
    ),
    Setting(
        "agent_wait_timeout",
        "30s",
        "How long a USER of an AGENT_MODE_EXTERNAL session waits for the AGENT to attach.",
    ),
    Setting(
        "expiring_lead",
        "30s",
        "How long before max_duration runs out the session_expiring event is sent.",
    ),
    Setting("heartbeat_interval", "2s", "How often usage of live sessions is persisted."),
    Setting(
        "interact_max_frames_per_second",
        "250",
        "Frames one USER or OBSERVER Interact stream may send per second (with a burst as large); "
        "more are dropped and reported. A stream sending ten times this is closed.",
        int,
    ),
    Setting(
        "outbox_capacity",
        "256",
        "Frames queued toward one participant before its oldest media is dropped.",
        int,
    ),
    Setting(
        "engine",
        "on",
        "The built-in AI engine for AGENT_MODE_BUILTIN sessions: on or off.",
    ),
    Setting(
        "end_of_turn_silence",
        "300ms",
        "Silence after speech that ends the user's turn (built-in engine).",
    ),
    Setting(
        "greeting",
        "on",
        "Whether the built-in character greets when a session opens (metadata greeting=off "
        "turns it off per session).",
    ),
    Setting(
        "playback_lead",
        "200ms",
        "How far ahead of real time the built-in engine streams its voice.",
    ),
    Setting(
        "llm_base_url",
        "",
        "OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1) for the engine's brain; "
        "empty: the offline brain.",
    ),
    Setting("llm_model", "", "Model name sent to the LLM endpoint."),
    Setting("llm_api_key", "", "Bearer key for the LLM endpoint."),
    Setting(
        "llm_timeout",
        "20s",
        "Longest wait on the LLM endpoint (connect, first byte, between pieces) before the "
        "character says it cannot think right now.",
    ),
    Setting(
        "llm_max_history_tokens",
        "2000",
        "How much of the conversation (estimated tokens, newest first) is sent to the LLM; the "
        "session summary stands in for older turns.",
        int,
    ),
    Setting(
        "avatar_fps",
        "15",
        "Frames per second of the built-in engine's drawn avatar in VIDEO sessions.",
        int,
    ),
    Setting("log_level", "INFO", "DEBUG, INFO, WARNING or ERROR."),
    Setting("log_format", "text", "text (key=value) or json (one JSON object per line)."),
)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50051
    database_url: str = "sqlite+aiosqlite:///./parleyd.db"
    public_grpc_target: str = ""
    http_port: int = 8080
    public_http_url: str = ""
    http_max_connections: int = 256
    http_header_timeout_ms: int = 5_000
    ice_servers: str = ""
    webrtc_host_addresses: str = ""
    webrtc_connect_timeout_ms: int = 20_000
    webrtc_max_peers_per_session: int = 4
    webrtc_max_peers_per_key: int = 32
    default_resume_window_ms: int = 300_000
    dev_key_max_session_duration_ms: int = 3_600_000
    expiry_interval_ms: int = 1_000
    sqlite_synchronous: str = "NORMAL"
    session_cache: str = "auto"
    drain_timeout_ms: int = 10_000
    pause_grace_ms: int = 500
    agent_wait_timeout_ms: int = 30_000
    expiring_lead_ms: int = 30_000
    heartbeat_interval_ms: int = 2_000
    interact_max_frames_per_second: int = 250
    outbox_capacity: int = 256
    engine: str = "on"
    end_of_turn_silence_ms: int = 300
    greeting: str = "on"
    playback_lead_ms: int = 200
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: str = ""
    llm_timeout_ms: int = 20_000
    llm_max_history_tokens: int = 2_000
    avatar_fps: int = 15
    log_level: str = "INFO"
    log_format: str = "text"

    def session_cache_enabled(self) -> bool | None:
        """The Repository's session_cache argument: None lets it decide by database."""
        return {"on": True, "off": False}.get(self.session_cache)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for s in SETTINGS:
        parser.add_argument(
            s.flag, dest=s.name, default=None, help=f"{s.help} [{s.env}, default {s.default!r}]"
        )


def load_settings(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Flag beats environment beats default."""
    env = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    for s in SETTINGS:
        value = getattr(args, s.name, None) if args is not None else None
        if value is None:
            value = env.get(s.env, s.default)
        raw[s.name] = value
    known = {f.name for f in fields(Settings)}
    out: dict[str, Any] = {}
    for s in SETTINGS:
        value = raw[s.name]
        if f"{s.name}_ms" in known:
            out[f"{s.name}_ms"] = _duration(s, value)
        elif s.kind is int:
            try:
                out[s.name] = int(value)
            except ValueError:
                raise SystemExit(f"{s.flag}/{s.env}: {value!r} is not a whole number") from None
        else:
            out[s.name] = value
    if out["sqlite_synchronous"].upper() not in ("NORMAL", "FULL"):
        raise SystemExit(f"--sqlite-synchronous: {out['sqlite_synchronous']!r} is not NORMAL/FULL")
    out["sqlite_synchronous"] = out["sqlite_synchronous"].upper()
    if out["session_cache"].lower() not in ("auto", "on", "off"):
        raise SystemExit(f"--session-cache: {out['session_cache']!r} is not auto/on/off")
    out["session_cache"] = out["session_cache"].lower()
    for name in ("engine", "greeting"):
        if out[name].lower() not in ("on", "off"):
            raise SystemExit(f"--{name}: {out[name]!r} is not on/off")
        out[name] = out[name].lower()
    for url in (u.strip() for u in out["ice_servers"].split(",")):
        if url and not url.startswith(("stun:", "turn:", "turns:")):
            raise SystemExit(f"--ice-servers: {url!r} must start with stun:, turn: or turns:")
    if not 0 <= out["http_port"] <= 65535:
        raise SystemExit("--http-port must be between 0 and 65535")
    for name in (
        "http_max_connections",
        "webrtc_max_peers_per_session",
        "webrtc_max_peers_per_key",
    ):
        if out[name] < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if out["http_header_timeout_ms"] < 100:
        raise SystemExit("--http-header-timeout must be at least 100ms")
    if out["interact_max_frames_per_second"] < 50:
        raise SystemExit("--interact-max-frames-per-second must be at least 50 (20 ms audio alone)")
    if out["outbox_capacity"] < 16:
        raise SystemExit("--outbox-capacity must be at least 16")
    if out["llm_max_history_tokens"] < 1:
        raise SystemExit("--llm-max-history-tokens must be at least 1")
    if not 1 <= out["avatar_fps"] <= 60:
        raise SystemExit("--avatar-fps must be between 1 and 60")
    return Settings(**out)


def _duration(s: Setting, value: str) -> int:
    try:
        return parse_duration_ms(value)
    except ValueError as exc:
        raise SystemExit(f"{s.flag}/{s.env}: {exc}") from None


def settings_table() -> Sequence[tuple[str, str, str, str]]:
    return [(s.flag, s.env, s.default, s.help) for s in SETTINGS]


def markdown_table() -> str:
    """The README's configuration table (tests check the README still matches it)."""
    rows = ["| flag | environment variable | default | what it does |", "|---|---|---|---|"]
    for flag, env, default, text in settings_table():
        shown = f"`{default}`" if default else "(empty)"
        rows.append(f"| `{flag}` | `{env}` | {shown} | {text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
