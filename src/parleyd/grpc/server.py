"""The gRPC transport of parleyd: one grpc.aio server with SessionService, reflection and health.

It is handed its collaborators (the session manager, the hub behind Interact, the WebRTC bridge
behind NegotiateWebRtc) by the composition root (`parleyd.app`); it starts nothing else. Health
reports SERVING only when the root says everything is ready, and NOT_SERVING while it drains.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from parley.v1 import session_service_pb2, session_service_pb2_grpc

from parleyd.domain import limits
from parleyd.grpc._decode import RateLimitedLog, with_decoding
from parleyd.grpc.auth import needs_api_key, with_api_key
from parleyd.grpc.calllog import MethodTable
from parleyd.grpc.interact import InteractHandler
from parleyd.grpc.reflection import enable_reflection
from parleyd.grpc.session_service import SessionServicer, WebRtcNegotiator
from parleyd.live import Hub
from parleyd.manager import SessionManager

log = logging.getLogger("parleyd.server")
# Requests whose bytes are not their message: one rate-limited WARNING line per method.
decode_log = logging.getLogger("parleyd.grpc.decode")

SERVICE_NAME = session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name

# Game engines hold one stream open for a whole conversation and ping to keep NATs open: accept
# pings as often as every 10 s, with or without calls, instead of answering GOAWAY "too_many_pings".
# A request message over MESSAGE_MAX_BYTES is refused by gRPC itself: the client sees
# RESOURCE_EXHAUSTED "Received message larger than max (<n> vs. 4194304)" (the call ends; on
# Interact the participant leaves as on any disconnect).
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", limits.MESSAGE_MAX_BYTES),
]


class GrpcServer:
    """Binds on construction (so the advertised target knows the port), serves on `start()`."""

    def __init__(
        self,
        manager: SessionManager,
        hub: Hub,
        *,
        host: str,
        port: int,
        public_target: str = "",
        webrtc: WebRtcNegotiator | None = None,
        webrtc_url: str = "",
        interact_frames_per_second: int = 0,
    ) -> None:
        self._server = grpc.aio.server(options=SERVER_OPTIONS)
        self.port: int = self._server.add_insecure_port(f"{_host_for_bind(host)}:{port}")
        self.target = public_target or f"{host}:{self.port}"
        self._health = health.aio.HealthServicer()
        # No interceptors: every handler is wrapped once here (decoding, auth, call log), not per
        # call.
        methods = _Methods()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, methods)
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), methods)
        servicer = SessionServicer(
            manager,
            InteractHandler(hub, frames_per_second=interact_frames_per_second),
            grpc_target=self.target,
            webrtc=webrtc,
            webrtc_url=webrtc_url,
        )
        session_service_pb2_grpc.add_SessionServiceServicer_to_server(servicer, methods)
        self._server.add_generic_rpc_handlers((methods.table(manager),))

    async def start(self) -> None:
        await self._server.start()

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._health.set("", status)
        await self._health.set(SERVICE_NAME, status)

    async def set_component(self, service: str, working: bool) -> None:
        """The health of one part of the server under its own service name (e.g. the built-in
        engine's voice, "parleyd.engine.voice"): SERVING when it works, NOT_SERVING when it is
        missing. The overall status ("") and SessionService's are not affected."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if working
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._health.set(service, status)

    async def wait(self) -> None:
        await self._server.wait_for_termination()

    async def stop(self, grace_s: float) -> None:
        """New calls are refused; calls in flight get `grace_s` to finish."""
        await self._server.stop(grace_s)


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
        # Decoding is the innermost wrapper, so undecodable bytes are answered after auth (an
        # unauthenticated caller learns nothing else) and before the servicer method runs.
        warn = RateLimitedLog(decode_log)
        wrapped = {}
        for method, h in self.handlers.items():
            decoded = with_decoding(method, h, warn)
            wrapped[method] = (
                with_api_key(decoded, manager) if needs_api_key(method, decoded) else decoded
            )
        return MethodTable(wrapped)


def _host_for_bind(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
