"""Signalling and the demo page: the bridge's HTTP side (aiohttp, on the server's own loop).

`POST /v1/sessions/{session_id}/webrtc` with `Authorization: Bearer <access token>` and a JSON
body `{"sdp": ..., "type": "offer", "role": "user"|"observer", "takeover": false}` answers
`{"sdp": ..., "type": "answer"}`. The same operation is `SessionService.NegotiateWebRtc`
(authenticated by API key). `GET /` is the demo page.

Errors are JSON `{"error": {"code": "...", "message": "..."}}` with the HTTP status of the gRPC
code: INVALID_ARGUMENT 400, UNAUTHENTICATED 401, NOT_FOUND 404, FAILED_PRECONDITION and
ALREADY_EXISTS 409, RESOURCE_EXHAUSTED 429. A refused offer changes nothing in the room.

Bounds. An offer has at most `SDP_MAX_CHARS` characters and `SDP_MAX_MEDIA` m= sections. A session
has at most `max_peers_per_session` peers connected or connecting, an API key at most
`max_peers_per_key` over all its sessions; past either the offer is refused RESOURCE_EXHAUSTED,
and a slot is free again as soon as a peer leaves. A request body is at most 256 KiB (413), and
a bad or missing token is refused before the body is read. HTTP connections are capped and held
to a header deadline (`ConnectionGuard`): aiohttp has neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiortc import RTCIceServer, RTCSessionDescription

from parleyd.domain.errors import (
    ErrorKind,
    InvalidArgument,
    ParleyError,
    ResourceExhausted,
    Unauthenticated,
)
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
SDP_MAX_MEDIA = 3  # audio, video and application (the data channel)
BODY_MAX_BYTES = 256 * 1024
# How long a new HTTP connection is safe from eviction by newer ones (ConnectionGuard): time
# enough for the server to read a request that was sent at once, even when it is busy.
EVICT_GRACE_S = 1.0
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
    ErrorKind.UNAVAILABLE: 503,
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
    media = sum(1 for line in sdp.splitlines() if line.startswith("m="))
    if media > SDP_MAX_MEDIA:
        raise InvalidArgument.field(
            "sdp",
            f"has {media} media sections (m= lines); at most {SDP_MAX_MEDIA}: audio, video and "
            "application",
        )
    return sdp


class Bridge:
    """Admits WebRTC peers into rooms; owns their connections until they leave."""

    def __init__(
        self,
        hub: Hub,
        ice_servers: Sequence[RTCIceServer] = (),
        *,
        connect_timeout_s: float = 20.0,
        max_peers_per_session: int = 4,
        max_peers_per_key: int = 32,
    ) -> None:
        self.hub = hub
        self.ice_servers = list(ice_servers)
        self.connect_timeout_s = connect_timeout_s
        self.max_peers_per_session = max_peers_per_session
        self.max_peers_per_key = max_peers_per_key
        self.peers: set[WebRtcPeer] = set()
        # Every peer connected or connecting holds a slot of its session and of its API key,
        # from before its offer is answered until it leaves.
        self._slots: dict[WebRtcPeer, tuple[str, str]] = {}
        self._per_session: Counter[str] = Counter()
        self._per_key: Counter[str] = Counter()

    def peer_count(self, session_id: str = "", api_key_id: str = "") -> int:
        """Peers connected or connecting: of one session, of one API key, or (neither) all."""
        if session_id:
            return self._per_session[session_id]
        if api_key_id:
            return self._per_key[api_key_id]
        return len(self._slots)

    def _check_slots(self, session: Session) -> None:
        if self._per_session[session.id] >= self.max_peers_per_session:
            raise ResourceExhausted(
                f"this session already has {self._per_session[session.id]} WebRTC peers "
                f"connected or connecting (webrtc_max_peers_per_session = "
                f"{self.max_peers_per_session}); one must leave first"
            )
        if self._per_key[session.api_key_id] >= self.max_peers_per_key:
            raise ResourceExhausted(
                f"the sessions of this API key already have {self._per_key[session.api_key_id]} "
                f"WebRTC peers connected or connecting (webrtc_max_peers_per_key = "
                f"{self.max_peers_per_key}); one must leave first"
            )

    def _take_slot(self, peer: WebRtcPeer, session: Session) -> None:
        self._slots[peer] = (session.id, session.api_key_id)
        self._per_session[session.id] += 1
        self._per_key[session.api_key_id] += 1

    def _free_slot(self, peer: WebRtcPeer) -> None:
        owner = self._slots.pop(peer, None)
        if owner is None:
            return
        for counter, name in ((self._per_session, owner[0]), (self._per_key, owner[1])):
            counter[name] -= 1
            if counter[name] <= 0:
                del counter[name]

    def _gone(self, peer: WebRtcPeer) -> None:
        self.peers.discard(peer)
        self._free_slot(peer)

    async def negotiate(
        self, session: Session, sdp: Any, sdp_type: Any, role: Role | None, takeover: bool = False
    ) -> tuple[str, str]:
        """The answer to a peer's offer; the peer is in the room when this returns."""
        ensure_joinable(session.state)
        if role not in (Role.USER, Role.OBSERVER):
            raise InvalidArgument.field("role", "must be user or observer")
        offer = check_offer(sdp, sdp_type)
        self._check_slots(session)
        room = self.hub.room_for(session)
        info = ParticipantInfo(new_participant_id(), role, "browser", "", "webrtc")
        peer = WebRtcPeer(
            info,
            room,
            rtc_configuration(self.ice_servers),
            video="\nm=video" in offer,
            outbox_capacity=self.hub.settings.outbox_capacity,
            connect_timeout_s=self.connect_timeout_s,
            on_gone=self._gone,
        )
        # Taken before the first await, so offers racing each other cannot pass the limits.
        self._take_slot(peer, session)
        joined = False
        try:
            try:
                answer = await asyncio.wait_for(
                    peer.answer(RTCSessionDescription(sdp=offer, type="offer")),
                    NEGOTIATE_TIMEOUT_S,
                )
            except Exception as exc:
                raise InvalidArgument.field("sdp", f"the offer cannot be answered: {exc}") from None
            await room.join(peer.participant, takeover=takeover)
            joined = True
        finally:
            if not joined:  # refused, failed or cancelled: the slot and the room are as before
                self._free_slot(peer)
                with contextlib.suppress(Exception):
                    await peer.pc.close()
                self.hub.forget_if_idle(room)
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


def _error(exc: ParleyError, status: int = 0) -> web.Response:
    body = {"error": {"code": exc.kind.value, "message": exc.message}}
    return web.json_response(body, status=status or _HTTP_STATUS[exc.kind])


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


def make_app(bridge: Bridge, middlewares: Sequence[Middleware] = ()) -> web.Application:
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
            except web.HTTPRequestEntityTooLarge:
                too_large = InvalidArgument.field("body", f"is over {BODY_MAX_BYTES} bytes")
                return _error(too_large, 413)
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

    app = web.Application(middlewares=[*middlewares, _cors], client_max_size=BODY_MAX_BYTES)
    app.router.add_post("/v1/sessions/{session_id}/webrtc", negotiate)
    app.router.add_route("OPTIONS", "/v1/sessions/{session_id}/webrtc", negotiate)
    app.router.add_get("/", static("index.html", "text/html"))
    app.router.add_get("/app.js", static("app.js", "text/javascript"))
    return app


class _Refused(asyncio.Protocol):
    """A connection past the cap: answered 429 and closed, before aiohttp sees it."""

    def __init__(self, response: bytes) -> None:
        self._response = response

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._response)
        transport.close()


class _Connection(asyncio.Protocol):
    """One admitted HTTP connection: aiohttp's own protocol inside, counted, with a deadline."""

    def __init__(self, guard: ConnectionGuard, handler: web.RequestHandler) -> None:
        self.guard = guard
        self.handler = handler
        self.transport: asyncio.BaseTransport | None = None
        self.closing = False
        self.opened = asyncio.get_running_loop().time()
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.handler.connection_made(transport)
        if self.closing:  # evicted before it was made
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.guard.header_timeout_s, self._expire)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        self.handler.eof_received()
        return None  # as aiohttp's: the transport closes itself

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.headers_done()
        self.guard.forget(self)
        self.handler.connection_lost(exc)

    def headers_done(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def close(self) -> None:
        self.closing = True
        self.headers_done()
        if self.transport is not None:
            self.transport.close()

    def _expire(self) -> None:
        self._deadline = None
        self.guard.timed_out += 1
        log.debug("http connection closed: no request headers within the deadline")
        self.guard.forget(self)
        self.close()


class ConnectionGuard:
    """The two bounds aiohttp lacks: a cap on open HTTP connections and a header deadline.

    It is the protocol factory of the listening socket, and wraps every connection it admits
    around aiohttp's own protocol (`server`, a `web.Server`). A connection must complete its
    first request's headers within `header_timeout_s` of being opened, or it is closed; its
    later requests are held to the same time by aiohttp's keep-alive timeout, which closes a
    connection that waits longer than that for the next request after a response (`HttpServer`
    sets it to `header_timeout_s`). `middleware` marks the headers complete: aiohttp calls it as
    soon as a request's headers are parsed, before the body is read.

    Past `max_connections`, a new connection evicts the oldest connection that has not completed
    a request yet, if that one has been open for `EVICT_GRACE_S` (so idle or trickling clients
    cannot lock out a real one, and a flood of new connections cannot evict a real one before
    its request is read); otherwise the new one is answered 429 and closed.
    """

    def __init__(self, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.server: web.Server | None = None
        self._open: dict[web.RequestHandler, _Connection] = {}
        self._waiting: dict[_Connection, None] = {}  # no request yet, oldest first
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0
        message = (
            f"too many HTTP connections (http_max_connections = {max_connections}); retry shortly"
        )
        body = json.dumps(
            {"error": {"code": ErrorKind.RESOURCE_EXHAUSTED.value, "message": message}}
        ).encode()
        self._refusal = (
            b"HTTP/1.1 429 Too Many Requests\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"Retry-After: 1\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def __call__(self) -> asyncio.Protocol:
        assert self.server is not None, "the aiohttp server is set before listening"
        if len(self._open) >= self.max_connections and not self._evict_oldest_waiting():
            self.refused += 1
            return _Refused(self._refusal)
        conn = _Connection(self, self.server())
        self._open[conn.handler] = conn
        self._waiting[conn] = None
        return conn

    def _evict_oldest_waiting(self) -> bool:
        oldest = next(iter(self._waiting), None)
        if oldest is None or asyncio.get_running_loop().time() - oldest.opened < EVICT_GRACE_S:
            return False
        self.evicted += 1
        self.forget(oldest)
        oldest.close()
        return True

    def forget(self, conn: _Connection) -> None:
        self._open.pop(conn.handler, None)
        self._waiting.pop(conn, None)

    @property
    def middleware(self) -> Middleware:
        @web.middleware
        async def headers_done(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            conn = self._open.get(request.protocol)
            if conn is not None:
                conn.headers_done()
                self._waiting.pop(conn, None)
            return await handler(request)

        return headers_done


class HttpServer:
    """The aiohttp side of `parleyd serve`: bound on start, advertised URL known after."""

    def __init__(
        self,
        bridge: Bridge,
        host: str,
        port: int,
        public_url: str = "",
        *,
        max_connections: int = 256,
        header_timeout_s: float = 5.0,
    ) -> None:
        self.bridge = bridge
        self.host = host
        self.port = port
        self.public_url = public_url
        self.guard = ConnectionGuard(max_connections, header_timeout_s)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    async def start(self) -> None:
        # No TCPSite: the guard is the listening socket's protocol factory, around aiohttp's.
        runner = web.AppRunner(
            make_app(self.bridge, [self.guard.middleware]),
            access_log=None,
            keepalive_timeout=self.guard.header_timeout_s,
        )
        await runner.setup()
        self._runner = runner
        try:
            self.guard.server = runner.server
            loop = asyncio.get_running_loop()
            self._listener = await loop.create_server(self.guard, self.host, self.port)
        except BaseException:
            self._runner = None
            await runner.cleanup()
            raise
        for sock in self._listener.sockets:
            self.port = int(sock.getsockname()[1])
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
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()  # closes the open connections
            self._runner = None
