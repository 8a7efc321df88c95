"""SessionService servicer: protobuf in, SessionManager call, protobuf out."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from parley.v1 import session_service_pb2 as pb
from parley.v1 import session_service_pb2_grpc as pb_grpc

from parleyd.domain import limits
from parleyd.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ParleyError,
)
from parleyd.domain.session import IMMUTABLE_FIELDS, OUTPUT_ONLY_FIELDS, WRITABLE_FIELDS, Session
from parleyd.grpc import convert
from parleyd.grpc.auth import current_caller
from parleyd.grpc.interact_convert import ROLE_FROM_PB
from parleyd.grpc.status import to_status
from parleyd.live.frames import Role
from parleyd.manager import SessionManager

log = logging.getLogger("parleyd.grpc")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = Any  # grpc.aio.ServicerContext; grpcio ships no type information
InteractHandler = Callable[[Any, Context], Awaitable[None]]


class WebRtcNegotiator(Protocol):
    """The WebRTC bridge as NegotiateWebRtc uses it (`webrtc.signalling.Bridge`)."""

    async def negotiate(
        self, session: Session, sdp: Any, sdp_type: Any, role: Role | None, takeover: bool
    ) -> tuple[str, str]: ...


def _rpc(
    fn: Callable[[Any, Req, Context], Awaitable[Resp]],
) -> Callable[[Any, Req, Context], Awaitable[Resp]]:
    """Turns caller errors into their status; a bug is logged and answered INTERNAL."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: Context) -> Resp:
        try:
            return await fn(self, request, context)
        except ParleyError as exc:
            await context.abort_with_status(to_status(exc))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        raise AssertionError("unreachable")

    return wrapper


class SessionServicer(pb_grpc.SessionServiceServicer):
    def __init__(
        self,
        manager: SessionManager,
        interact: InteractHandler,
        *,
        grpc_target: str,
        webrtc: WebRtcNegotiator | None = None,
        webrtc_url: str = "",
    ) -> None:
        """`grpc_target` and `webrtc_url` are what CreateSession tells clients to connect to;
        `webrtc` is None where the bridge is not running (NegotiateWebRtc then refuses)."""
        self._m = manager
        self._interact = interact
        self._grpc_target = grpc_target
        self._webrtc = webrtc
        self._webrtc_url = webrtc_url

    async def Interact(self, request_iterator: Any, context: Context) -> None:  # type: ignore[override]
        await self._interact(request_iterator, context)

    @_rpc
    async def NegotiateWebRtc(
        self, request: pb.NegotiateWebRtcRequest, context: Context
    ) -> pb.NegotiateWebRtcResponse:
        session = await self._m.get_session(current_caller().key, request.session_id)
        bridge = self._webrtc
        if bridge is None:
            raise FailedPrecondition(
                "the WebRTC bridge is not running on this server (see its log)"
            )
        sdp, sdp_type = await bridge.negotiate(
            session, request.sdp, request.type, ROLE_FROM_PB.get(request.role), request.takeover
        )
        return pb.NegotiateWebRtcResponse(sdp=sdp, type=sdp_type)

    @_rpc
    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: Context
    ) -> pb.CreateSessionResponse:
        if not request.HasField("session"):
            raise InvalidArgument.field("session", "is required")
        caller = current_caller()
        spec = convert.spec_from_pb(request.session)
        created = await self._m.create_session(
            caller.key, spec, request_id=request.request_id, api_key_plaintext=caller.plaintext
        )
        webrtc = self._webrtc_url.format(session_id=created.session.id) if self._webrtc_url else ""
        return pb.CreateSessionResponse(
            session=convert.session_to_pb(created.session, self._m.now_ms()),
            access_token=created.access_token,
            connect=pb.ConnectInfo(grpc_target=self._grpc_target, webrtc_signaling_url=webrtc),
        )

    @_rpc
    async def GetSession(
        self, request: pb.GetSessionRequest, context: Context
    ) -> pb.GetSessionResponse:
        session = await self._m.get_session(current_caller().key, request.session_id)
        return pb.GetSessionResponse(session=convert.session_to_pb(session, self._m.now_ms()))

    @_rpc
    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        page = await self._m.list_sessions(
            current_caller().key,
            page_size=request.page_size,
            page_token=request.page_token,
            state=convert.state_from_pb(request.state),
            agent_id=request.agent_id,
            user_id=request.user_id,
            metadata=dict(request.metadata),
        )
        now = self._m.now_ms()
        return pb.ListSessionsResponse(
            sessions=[convert.session_to_pb(s, now) for s in page.items],
            next_page_token=page.next_page_token,
        )

    @_rpc
    async def UpdateSession(
        self, request: pb.UpdateSessionRequest, context: Context
    ) -> pb.UpdateSessionResponse:
        if not request.HasField("session"):
            raise InvalidArgument.field("session", "is required")
        if not request.session.id:
            raise InvalidArgument.field("session.id", "is required")
        paths = _checked_paths(list(request.update_mask.paths))
        spec = convert.spec_from_pb(request.session)
        session = await self._m.update_session(
            current_caller().key, request.session.id, spec, paths
        )
        return pb.UpdateSessionResponse(session=convert.session_to_pb(session, self._m.now_ms()))

    @_rpc
    async def DisconnectSession(
        self, request: pb.DisconnectSessionRequest, context: Context
    ) -> pb.DisconnectSessionResponse:
        session = await self._m.disconnect_session(current_caller().key, request.session_id)
        return pb.DisconnectSessionResponse(
            session=convert.session_to_pb(session, self._m.now_ms())
        )

    @_rpc
    async def TerminateSession(
        self, request: pb.TerminateSessionRequest, context: Context
    ) -> pb.TerminateSessionResponse:
        session = await self._m.terminate_session(current_caller().key, request.session_id)
        return pb.TerminateSessionResponse(session=convert.session_to_pb(session, self._m.now_ms()))

    @_rpc
    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: Context
    ) -> pb.ListMessagesResponse:
        page = await self._m.list_messages(
            current_caller().key,
            request.session_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListMessagesResponse(
            messages=[convert.message_to_pb(m) for m in page.items],
            next_page_token=page.next_page_token,
        )

    @_rpc
    async def GetUsage(self, request: pb.GetUsageRequest, context: Context) -> pb.GetUsageResponse:
        usage = await self._m.usage(
            current_caller().key,
            start_ms=(
                convert.timestamp_ms(request.start_time, "start_time")
                if request.HasField("start_time")
                else None
            ),
            end_ms=(
                convert.timestamp_ms(request.end_time, "end_time")
                if request.HasField("end_time")
                else None
            ),
            session_id=request.session_id,
        )
        total = sum(u.duration_ms for u in usage)
        return pb.GetUsageResponse(
            sessions=[
                pb.SessionUsage(
                    session_id=u.session_id,
                    agent_id=u.agent_id,
                    duration=convert.duration(u.duration_ms),
                )
                for u in usage
            ],
            total_duration=convert.duration(total),
        )


def _checked_paths(paths: list[str]) -> list[str]:
    if not paths:
        raise InvalidArgument.field(
            "update_mask", "is required: name the fields to change, e.g. paths: ['dynamic_info']"
        )
    if len(paths) > limits.UPDATE_MASK_PATHS_MAX:  # refused before looking at any of them
        raise InvalidArgument.field(
            "update_mask.paths",
            f"has {len(paths)} paths; the limit is {limits.UPDATE_MASK_PATHS_MAX}",
        )
    violations: list[FieldViolation] = []
    out: list[str] = []
    for path in paths:
        if path in WRITABLE_FIELDS:
            if path not in out:
                out.append(path)
        elif path in IMMUTABLE_FIELDS:
            violations.append(
                FieldViolation(f"session.{path}", "is fixed at creation and cannot be updated")
            )
        elif path in OUTPUT_ONLY_FIELDS:
            violations.append(FieldViolation(f"session.{path}", "is output only"))
        else:
            violations.append(
                FieldViolation("update_mask.paths", f"unknown or non-writable field '{path}'")
            )
    if violations:
        raise InvalidArgument(violations)
    return out
