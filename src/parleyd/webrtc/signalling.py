"""Signalling and the demo page: the bridge's HTTP side (aiohttp, on the server's own loop).

`POST /v1/sessions/{session_id}/webrtc` with `Authorization: Bearer <access token>` and a JSON
body `{"sdp": ..., "type": "offer", "role": "user"|"observer", "takeover": false}` answers
`{"sdp": ..., "type": "answer"}`. The same operation is `SessionService.NegotiateWebRtc`
(authenticated by API key). `GET /` is the demo page.

Errors are JSON `{"error": {"code": "...", "message": "..."}}` with the HTTP status of the gRPC
code: INVALID_ARGUMENT 400, UNAUTHENTICATED 401, NOT_FOUND 404, FAILED_PRECONDITION and
ALREADY_EXISTS 409, RESOURCE_EXHAUSTED 429. A refused offer changes nothing in the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCIceServer, RTCSessionDescription

from parleyd.domain.errors import ErrorKind, InvalidArgument, ParleyError, Unauthenticated
from parleyd.domain.ids import new_participant_id
from parleyd.domain.lifecycle import ensure_joinable
from parleyd.domain.session import Session
from parleyd.live import Hub
from parleyd.live.frames import ParticipantInfo, Role
from parleyd.webrtc.ice import rtc_configuration
from parleyd.webrtc.peer import WebRtcPeer

log = logging.getLogger("parleyd.webrtc")

STATIC = Path(__file__).parent / "static"
SDP_MAX_CHARS = 64 * 1024
NEGOTIATE_TIMEOUT_S = 10.0
ROLES = {
    "user": Role.USER,
    "observer": Role.OBSERVER,
    "ROLE_USER": Role.USER,
    "ROLE_OBSERVER": Role.OBSERVER,
}

_HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.FAILED_PRECONDITION: 409,
    ErrorKind.ALREADY_EXISTS: 409,
    ErrorKind.RESOURCE_EXHAUSTED: 429,
}


def check_offer(sdp: Any, sdp_type: Any) -> str:
    if sdp_type != "offer":
        raise InvalidArgument.field("type", "must be 'offer'")
    if not isinstance(sdp, str) or not sdp.strip():
        raise InvalidArgument.field("sdp", "is required: the peer's SDP offer")
    if len(sdp) > SDP_MAX_CHARS:
        raise InvalidArgument.field("sdp", f"is longer than {SDP_MAX_CHARS} characters")
    if not sdp.lstrip().startswith("v=0") or "\nm=" not in sdp:
        raise InvalidArgument.field("sdp", "is not an SDP offer (v=0 ... with m= sections)")
    return sdp


class Bridge:
    """Admits WebRTC peers into rooms; owns their connections until they leave."""

    def __init__(
        self,
        hub: Hub,
        ice_servers: Sequence[RTCIceServer] = (),
        *,
        connect_timeout_s: float = 20.0,
    ) -> None:
        self.hub = hub
        self.ice_servers = list(ice_servers)
        self.connect_timeout_s = connect_timeout_s
        self.peers: set[WebRtcPeer] = set()

    async def negotiate(
        self, session: Session, sdp: Any, sdp_type: Any, role: Role | None, takeover: bool = False
    ) -> tuple[str, str]:
        """The answer to a peer's offer; the peer is in the room when this returns."""
        ensure_joinable(session.state)
        if role not in (Role.USER, Role.OBSERVER):
            raise InvalidArgument.field("role", "must be user or observer")
        offer = check_offer(sdp, sdp_type)
        room = self.hub.room_for(session)
        info = ParticipantInfo(new_participant_id(), role, "browser", "", "webrtc")
        peer = WebRtcPeer(
            info,
            room,
            rtc_configuration(self.ice_servers),
            video="\nm=video" in offer,
            outbox_capacity=self.hub.settings.outbox_capacity,
            connect_timeout_s=self.connect_timeout_s,
            on_gone=self.peers.discard,
        )
        try:
            answer = await asyncio.wait_for(
                peer.answer(RTCSessionDescription(sdp=offer, type="offer")), NEGOTIATE_TIMEOUT_S
            )
        except Exception as exc:
            with contextlib.suppress(Exception):
                await peer.pc.close()
            self.hub.forget_if_idle(room)
            raise InvalidArgument.field("sdp", f"the offer cannot be answered: {exc}") from None
        try:
            await room.join(peer.participant, takeover=takeover)
        except BaseException:
            with contextlib.suppress(Exception):
                await peer.pc.close()
            self.hub.forget_if_idle(room)
            raise
        self.peers.add(peer)
        peer.start()
        log.info(
            "webrtc peer joined",
            extra={"session_id": session.id, "participant": peer.id, "role": role.value},
        )
        return answer.sdp, answer.type

    async def close(self) -> None:
        await asyncio.gather(
            *(p.stop("server is shutting down") for p in list(self.peers)), return_exceptions=True
        )


def _error(exc: ParleyError) -> web.Response:
    body = {"error": {"code": exc.kind.value, "message": exc.message}}
    return web.json_response(body, status=_HTTP_STATUS[exc.kind])


@web.middleware
async def _cors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Lets a page on another origin negotiate (the token, not cookies, authenticates)."""
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
    else:
        response = await handler(request)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    return response


def make_app(bridge: Bridge) -> web.Application:
    async def negotiate(request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        try:
            auth = request.headers.get("Authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("missing access token: send 'Authorization: Bearer <token>'")
            session = await bridge.hub.sessions.admit(session_id, token.strip())
            try:
                body = await request.json()
            except ValueError:
                raise InvalidArgument.field("body", "must be a JSON object") from None
            if not isinstance(body, dict):
                raise InvalidArgument.field("body", "must be a JSON object")
            role = ROLES.get(str(body.get("role", "user")))
            sdp, sdp_type = await bridge.negotiate(
                session, body.get("sdp"), body.get("type"), role, bool(body.get("takeover"))
            )
        except ParleyError as exc:
            return _error(exc)
        return web.json_response({"sdp": sdp, "type": sdp_type})

    def static(name: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            return web.Response(
                body=(STATIC / name).read_bytes(),
                content_type=content_type,
                headers={"Cache-Control": "no-store"},
            )

        return serve

    app = web.Application(middlewares=[_cors], client_max_size=256 * 1024)
    app.router.add_post("/v1/sessions/{session_id}/webrtc", negotiate)
    app.router.add_route("OPTIONS", "/v1/sessions/{session_id}/webrtc", negotiate)
    app.router.add_get("/", static("index.html", "text/html"))
    app.router.add_get("/app.js", static("app.js", "text/javascript"))
    return app


class HttpServer:
    """The aiohttp side of `parleyd serve`: bound on start, advertised URL known after."""

    def __init__(self, bridge: Bridge, host: str, port: int, public_url: str = "") -> None:
        self.bridge = bridge
        self.host = host
        self.port = port
        self.public_url = public_url
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(make_app(self.bridge), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break

    @property
    def url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def webrtc_url(self) -> str:
        """CreateSession's connect.webrtc_signaling_url, with a {session_id} placeholder."""
        return self.url + "/v1/sessions/{session_id}/webrtc"

    async def stop(self) -> None:
        await self.bridge.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
