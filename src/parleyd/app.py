"""The composition root: builds every part of a parleyd server from typed `Settings`, and runs it.

This is the one place that knows all the parts. It opens the database, builds the session
manager on the repository, the hub on the manager (with the built-in engine when it can run),
the WebRTC bridge and its HTTP server on the hub, and the gRPC server on all of them — each
collaborator passed through a constructor. A part that cannot start (a speech component, the
HTTP port) is logged and left out; the sessions API never goes down with it.

Health follows the database too: a probe (`SELECT 1` every DB_PROBE_INTERVAL_S, and at once when
a call finds the database unreachable) turns the server NOT_SERVING while the database is out of
reach, so a load balancer takes this replica out, and SERVING again when it answers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from parleyd.config import Settings
from parleyd.grpc.server import GrpcServer
from parleyd.live import AgentFactory, Hub, LiveSettings
from parleyd.manager import SessionManager
from parleyd.store import Database, Repository, open_database

if TYPE_CHECKING:
    from parleyd.engine.factory import EngineCheck
    from parleyd.webrtc.signalling import HttpServer

log = logging.getLogger("parleyd.server")

# The database probe behind health: how often it runs, and how long one SELECT 1 may take.
DB_PROBE_INTERVAL_S = 1.0
DB_PROBE_TIMEOUT_S = 2.0


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db: Database | None = None
        self.repo: Repository | None = None
        self.manager: SessionManager | None = None
        self.hub: Hub | None = None
        self.http: HttpServer | None = None
        self.grpc: GrpcServer | None = None
        # What of the built-in engine works here (None: the engine is off or did not start).
        self.engine_check: EngineCheck | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._db_probe: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.grpc.port if self.grpc is not None else 0

    @property
    def http_port(self) -> int:
        return self.http.port if self.http is not None else 0

    async def start(self) -> None:
        s = self.settings
        self.db = await open_database(s.database_url, sqlite_synchronous=s.sqlite_synchronous)
        self.repo = Repository(self.db, session_cache=s.session_cache_enabled())
        self.manager = manager = SessionManager(
            self.repo, default_resume_window_ms=s.default_resume_window_ms
        )
        await manager.load_revocations()
        agent_factory, self.engine_check = builtin_engine(s)
        self.hub = hub = Hub(manager, live_settings(s), agent_factory=agent_factory)
        await hub.recover()
        self.http = await _start_http(s, hub)
        self.grpc = grpc_server = GrpcServer(
            manager,
            hub,
            host=s.host,
            port=s.port,
            public_target=s.public_grpc_target,
            webrtc=self.http.bridge if self.http is not None else None,
            webrtc_url=self.http.webrtc_url if self.http is not None else "",
            interact_frames_per_second=s.interact_max_frames_per_second,
        )
        await grpc_server.start()
        self._tasks.append(
            asyncio.create_task(manager.run_expiry(s.expiry_interval_ms, self._stop))
        )
        self._tasks.append(asyncio.create_task(hub.run_heartbeat(self._stop)))
        self._tasks.append(asyncio.create_task(manager.run_revocation_watch(self._stop)))
        # Each engine component under its own health name ("parleyd.engine.voice"), set before
        # the server says SERVING, so whoever waits for that sees them right.
        for component in self.engine_check.components if self.engine_check else ():
            await grpc_server.set_component(component.health_service, component.ok)
        # SERVING only now: the database is migrated and every service is registered.
        await grpc_server.set_serving(True)
        self._db_probe = asyncio.create_task(self._watch_database(self.db, grpc_server))
        self._tasks.append(self._db_probe)
        log.info(
            "listening",
            extra={"address": f"{s.host}:{self.port}", "database": _safe_url(s.database_url)},
        )

    async def _watch_database(self, db: Database, grpc_server: GrpcServer) -> None:
        """Health says whether the database answers: NOT_SERVING from the first failed probe
        (one WARNING), SERVING again from the first one that works (one INFO)."""
        reachable = True
        while not self._stop.is_set():
            db.unreachable.clear()
            failure: BaseException | None = None
            try:
                await asyncio.wait_for(db.ping(), DB_PROBE_TIMEOUT_S)
            except Exception as exc:  # Unavailable, a timeout, or anything else: not serving
                failure = exc
            if (failure is None) != reachable:
                reachable = failure is None
                await grpc_server.set_serving(reachable)
                if reachable:
                    log.info("database reachable again: health SERVING")
                else:
                    cause = failure.__cause__ if failure is not None else None
                    log.warning(
                        "database unreachable: health NOT_SERVING until it answers (%s)",
                        repr(cause or failure),
                    )
            # While reachable, a call that finds the database gone wakes the probe at once.
            wake = (self._stop, db.unreachable) if reachable else (self._stop,)
            await _first(DB_PROBE_INTERVAL_S, *wake)

    async def wait(self) -> None:
        assert self.grpc is not None
        await self.grpc.wait()

    async def stop(self, grace_s: float | None = None) -> None:
        """Drains: health goes NOT_SERVING, live sessions pause, calls in flight get `grace_s`."""
        if grace_s is None:
            grace_s = self.settings.drain_timeout_ms / 1000
        if self._db_probe is not None:  # it must not say SERVING again while we drain
            self._db_probe.cancel()
            await asyncio.gather(self._db_probe, return_exceptions=True)
        if self.grpc is not None:
            await self.grpc.set_serving(False)
        self._stop.set()
        if self.hub is not None:
            await self.hub.shutdown()
        if self.http is not None:
            await self.http.stop()
        if self.grpc is not None:
            await self.grpc.stop(grace_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.db is not None:
            await self.db.close()
        log.info("stopped")


async def _first(timeout_s: float, *events: asyncio.Event) -> None:
    """Returns when one of `events` is set, or after `timeout_s`."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def live_settings(s: Settings) -> LiveSettings:
    return LiveSettings(
        outbox_capacity=s.outbox_capacity,
        pause_grace_ms=s.pause_grace_ms,
        agent_wait_timeout_ms=s.agent_wait_timeout_ms,
        expiring_lead_ms=s.expiring_lead_ms,
        heartbeat_interval_ms=s.heartbeat_interval_ms,
    )


def builtin_engine(s: Settings) -> tuple[AgentFactory | None, EngineCheck | None]:
    """The built-in AI for AGENT_MODE_BUILTIN sessions (None when off or it cannot run here),
    and what of it works here: a missing component (its voice, say) is left out, not fatal."""
    if s.engine != "on":
        return None, None
    try:
        from parleyd.engine.agent import EngineSettings
        from parleyd.engine.factory import check_engine, default_parts, engine_factory
        from parleyd.engine.llm_brain import LlmSettings

        llm = LlmSettings(
            base_url=s.llm_base_url,
            model=s.llm_model,
            api_key=s.llm_api_key,
            timeout_s=s.llm_timeout_ms / 1000,
            max_history_tokens=s.llm_max_history_tokens,
        )
        engine = EngineSettings(
            end_of_turn_silence_ms=s.end_of_turn_silence_ms,
            playback_lead_ms=s.playback_lead_ms,
            greeting=s.greeting == "on",
            video_fps=s.avatar_fps,
        )
        check = check_engine()  # one WARNING per missing component, here, not per turn
        return engine_factory(default_parts(llm, check), engine), check
    except (ImportError, OSError) as exc:
        # A broken engine must not take the sessions API down with it.
        log.error("built-in engine unavailable: %s", exc)
        return None, None


async def _start_http(s: Settings, hub: Hub) -> HttpServer | None:
    """The WebRTC bridge's HTTP side; if it cannot start, gRPC is served without it."""
    try:
        from parleyd.webrtc.ice import parse_host_addresses, parse_ice_servers
        from parleyd.webrtc.ice import set_host_addresses as offer_only
        from parleyd.webrtc.signalling import Bridge, HttpServer

        offer_only(parse_host_addresses(s.webrtc_host_addresses))
        bridge = Bridge(
            hub,
            parse_ice_servers(s.ice_servers),
            connect_timeout_s=s.webrtc_connect_timeout_ms / 1000,
            max_peers_per_session=s.webrtc_max_peers_per_session,
            max_peers_per_key=s.webrtc_max_peers_per_key,
        )
        http = HttpServer(
            bridge,
            s.host,
            s.http_port,
            s.public_http_url,
            max_connections=s.http_max_connections,
            header_timeout_s=s.http_header_timeout_ms / 1000,
        )
        await http.start()
    except (ImportError, OSError, ValueError) as exc:
        log.error("WebRTC bridge unavailable (HTTP port %s): %s", s.http_port, exc)
        return None
    log.info("webrtc bridge listening", extra={"url": http.url})
    return http


def _safe_url(url: str) -> str:
    # Never log a database password.
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
