"""Server bootstrap: one grpc.aio server with SessionService, reflection and health.

`ParleydServer` owns the database, the session manager and the background expiry sweep; `start()`
binds and reports SERVING once the database is migrated, `stop()` drains (NOT_SERVING first, then a
grace period for calls in flight).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from parley.v1 import session_service_pb2, session_service_pb2_grpc

from parleyd.config import Settings
from parleyd.grpc.auth import needs_api_key, with_api_key
from parleyd.grpc.calllog import MethodTable
from parleyd.grpc.interact import InteractHandler
from parleyd.grpc.reflection import enable_reflection
from parleyd.grpc.session_service import SessionServicer
from parleyd.live.hub import Hub, LiveSettings
from parleyd.manager import SessionManager
from parleyd.store import Database, Repository, open_database

if TYPE_CHECKING:
    from parleyd.webrtc.signalling import HttpServer

log = logging.getLogger("parleyd.server")

SERVICE_NAME = session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name

# Game engines hold one stream open for a whole conversation and ping to keep NATs open: accept
# pings as often as every 10 s, with or without calls, instead of answering GOAWAY "too_many_pings".
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
]


class ParleydServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db: Database | None = None
        self.repo: Repository | None = None
        self.manager: SessionManager | None = None
        self.hub: Hub | None = None
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.http: HttpServer | None = None

    @property
    def http_port(self) -> int:
        return self.http.port if self.http is not None else 0

    async def start(self) -> None:
        s = self.settings
        self.db = await open_database(s.database_url, sqlite_synchronous=s.sqlite_synchronous)
        self.repo = Repository(self.db, session_cache=s.session_cache_enabled())
        self.manager = SessionManager(
            self.repo, default_resume_window_ms=s.default_resume_window_ms
        )
        # No interceptors: every handler is wrapped once here (auth, call log), not per call.
        self._server = server = grpc.aio.server(options=SERVER_OPTIONS)
        methods = _Methods()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, methods)
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), methods)
        self.hub = Hub(
            self.manager,
            LiveSettings(
                outbox_capacity=s.outbox_capacity,
                pause_grace_ms=s.pause_grace_ms,
                agent_wait_timeout_ms=s.agent_wait_timeout_ms,
                expiring_lead_ms=s.expiring_lead_ms,
                heartbeat_interval_ms=s.heartbeat_interval_ms,
            ),
        )
        if s.engine == "on":
            try:
                self.hub.agent_factory = _engine_factory(s)
            except (ImportError, OSError) as exc:
                # A missing speech component must not take the sessions API down with it.
                log.error("built-in engine unavailable: %s", exc)
        await self.hub.recover()
        await self._start_http()
        servicer = SessionServicer(
            self.manager,
            grpc_target="",
            webrtc_url=self.http.webrtc_url if self.http is not None else "",
        )
        servicer.set_webrtc(self.http.bridge if self.http is not None else None)
        servicer.set_interact(InteractHandler(self.manager, self.hub))
        session_service_pb2_grpc.add_SessionServiceServicer_to_server(servicer, methods)
        server.add_generic_rpc_handlers((methods.table(self.manager),))
        self.port = server.add_insecure_port(f"{_host_for_bind(s.host)}:{s.port}")
        servicer.set_grpc_target(s.advertised_grpc_target(self.port))
        await server.start()
        self._tasks.append(
            asyncio.create_task(self.manager.run_expiry(s.expiry_interval_ms, self._stop))
        )
        self._tasks.append(asyncio.create_task(self.hub.run_heartbeat(self._stop)))
        # SERVING only now: the database is migrated and every service is registered.
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "listening",
            extra={"address": f"{s.host}:{self.port}", "database": _safe_url(s.database_url)},
        )

    async def _start_http(self) -> None:
        """The WebRTC bridge's HTTP side; if it cannot start, gRPC is served without it."""
        s = self.settings
        assert self.hub is not None
        try:
            from parleyd.webrtc.ice import parse_host_addresses, parse_ice_servers
            from parleyd.webrtc.ice import set_host_addresses as offer_only
            from parleyd.webrtc.signalling import Bridge, HttpServer

            offer_only(parse_host_addresses(s.webrtc_host_addresses))
            bridge = Bridge(
                self.hub,
                parse_ice_servers(s.ice_servers),
                connect_timeout_s=s.webrtc_connect_timeout_ms / 1000,
            )
            http = HttpServer(bridge, s.host, s.http_port, s.public_http_url)
            await http.start()
        except (ImportError, OSError, ValueError) as exc:
            log.error("WebRTC bridge unavailable (HTTP port %s): %s", s.http_port, exc)
            return
        self.http = http
        log.info("webrtc bridge listening", extra={"url": http.url})

    async def _set_health(self, status: int) -> None:
        await self._health.set("", status)
        await self._health.set(SERVICE_NAME, status)

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()

    async def stop(self, grace_s: float | None = None) -> None:
        """Drains: health goes NOT_SERVING, new calls are refused, calls in flight get `grace_s`."""
        if grace_s is None:
            grace_s = self.settings.drain_timeout_ms / 1000
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self._stop.set()
        if self.hub is not None:
            await self.hub.shutdown()
        if self.http is not None:
            await self.http.stop()
        if self._server is not None:
            await self._server.stop(grace_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.db is not None:
            await self.db.close()
        log.info("stopped")


class _Methods:
    """Stands in for the server while generated add_*_to_server functions register handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, generic_handlers: Any) -> None:
        pass  # the same handlers arrive by name through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler

    def table(self, manager: SessionManager) -> MethodTable:
        service = session_service_pb2.DESCRIPTOR.services_by_name["SessionService"]
        missing = [
            m.name for m in service.methods if f"/{SERVICE_NAME}/{m.name}" not in self.handlers
        ]
        if missing:
            raise RuntimeError(f"SessionService methods not registered: {missing}")
        return MethodTable(
            {
                method: with_api_key(h, manager) if needs_api_key(method, h) else h
                for method, h in self.handlers.items()
            }
        )


def _host_for_bind(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _safe_url(url: str) -> str:
    # Never log a database password.
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _engine_factory(s: Settings) -> Any:
    from parleyd.engine.agent import EngineSettings
    from parleyd.engine.factory import default_parts, engine_factory

    environ = {
        "PARLEYD_LLM_BASE_URL": s.llm_base_url,
        "PARLEYD_LLM_MODEL": s.llm_model,
        "PARLEYD_LLM_API_KEY": s.llm_api_key,
        "PARLEYD_LLM_TIMEOUT_S": str(s.llm_timeout_ms / 1000),
    }
    settings = EngineSettings(
        end_of_turn_silence_ms=s.end_of_turn_silence_ms,
        playback_lead_ms=s.playback_lead_ms,
        greeting=s.greeting == "on",
    )
    return engine_factory(default_parts({k: v for k, v in environ.items() if v}), settings)
