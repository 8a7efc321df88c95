"""The deserialisation seam: request bytes that are not the method's message are the caller's fault.

grpcio answers an exception raised by a request deserializer with UNKNOWN and logs its traceback
at ERROR, for truncated or garbage bytes and for invalid UTF-8 in a string field alike. Here
every handler of the server gets, once at start-up (`with_decoding`, called by `grpc/server.py`),
a deserializer that never raises: it returns an `Undecodable` marker instead. Its wrapper answers
the marker:

- unary requests (unary-unary, unary-stream): INVALID_ARGUMENT before the handler runs;
- streamed requests (Interact, reflection): `context.read()` and the request iterator the
  handler gets raise `UndecodableRequest` (an `InvalidArgument`, so a `ParleyError`) in its
  place; the handler ends the call with it (Interact does so itself, leaving its room first),
  and whatever escapes the handler is answered INVALID_ARGUMENT here.

Either way the status is INVALID_ARGUMENT "request is not a valid <message>: <what the parser
said>" with a BadRequest (field `request`) and an ErrorInfo, and the log gets one WARNING line at
most, rate-limited per method (`RateLimitedLog`, which Interact uses too), never a traceback.

`grpc/auth.py` runs outside this wrapper, so an unauthenticated caller still learns nothing but
UNAUTHENTICATED.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool

from parleyd.domain import limits
from parleyd.domain.errors import FieldViolation, InvalidArgument
from parleyd.grpc.status import to_status


class RateLimitedLog:
    """Caller mistakes as WARNING lines, at most one per `interval_s` for each key.

    A client can repeat a mistake as fast as it likes; the log must not grow with it. The first
    line for a key is written at once; within the next `interval_s` further ones are only counted,
    and the next line written carries `suppressed=<how many were not>`. Keys are a fixed set
    (method names, for instance), so the table stays small.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object, **fields: object) -> bool:
        """Logs `msg % args` with `fields` unless `key` was logged within the interval.

        Returns whether a line was written.
        """
        if not self.logger.isEnabledFor(logging.WARNING):
            return False
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        self.logger.warning(msg, *args, extra={**fields, "suppressed": suppressed})
        return True


# upb says "Error parsing message with type 'parley.v1.X': String field had bad UTF-8"; the
# message name is said once, by us.
_PARSER_PREFIX = re.compile(r"^Error parsing message(?: with type '[^']*')?:?\s*")


class UndecodableRequest(InvalidArgument):
    """The bytes of a request are not the method's message (INVALID_ARGUMENT, field `request`)."""

    def __init__(self, message_name: str, problem: str) -> None:
        super().__init__(FieldViolation("request", f"is not a valid {message_name}: {problem}"))
        self.message = f"request is not a valid {message_name}: {problem}"
        self.args = (self.message,)


class Undecodable:
    """What the deserializer returns in place of a request it could not parse."""

    __slots__ = ("message_name", "problem")

    def __init__(self, message_name: str, problem: str) -> None:
        self.message_name = message_name
        self.problem = problem

    def error(self) -> UndecodableRequest:
        return UndecodableRequest(self.message_name, self.problem)


def request_type_name(method: str) -> str:
    """`parley.v1.GetSessionRequest` for "/parley.v1.SessionService/GetSession"."""
    try:
        found = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    except KeyError:
        return "request message"
    return str(found.input_type.full_name)


def tolerant(
    deserialize: Callable[[bytes], Any] | None, message_name: str
) -> Callable[[bytes], Any] | None:
    """`deserialize` that returns an `Undecodable` instead of raising."""
    if deserialize is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, and whatever else a parser may raise
            problem = _PARSER_PREFIX.sub("", str(exc)) or type(exc).__name__
            return Undecodable(message_name, problem[: limits.FIELD_VIOLATION_TEXT_MAX_CHARS])

    return decode


def with_decoding(method: str, handler: Any, warn: RateLimitedLog) -> Any:
    """`handler` with a deserializer that never raises and the wrapper that answers its marker.

    Built once per method at start-up. A handler of a kind it does not know is returned as is.
    """
    decode = tolerant(handler.request_deserializer, request_type_name(method))
    serialize = handler.response_serializer
    # (the handler's behaviour, how grpc makes such a handler, how its requests are guarded)
    kinds = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler, _unary),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler, _unary),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler, _streamed),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler, _streamed),
    )
    for behaviour, make, guard in kinds:
        if behaviour is not None:
            return make(
                guard(method, behaviour, warn),
                request_deserializer=decode,
                response_serializer=serialize,
            )
    return handler


def _warn(warn: RateLimitedLog, method: str, marker: Undecodable, context: Any) -> None:
    warn.warning(
        method,
        "undecodable request: %s",
        marker.problem,
        rpc_method=method,
        request_type=marker.message_name,
        peer=context.peer(),
    )


async def _refuse(warn: RateLimitedLog, method: str, marker: Undecodable, context: Any) -> None:
    _warn(warn, method, marker, context)
    await context.abort_with_status(to_status(marker.error()))
    raise AssertionError("unreachable")  # abort_with_status raises


def _unary(method: str, inner: Any, warn: RateLimitedLog) -> Any:
    """One request in: the marker is answered before `inner` runs."""
    if inspect.isasyncgenfunction(inner):

        async def gen(request: Any, context: Any) -> AsyncIterator[Any]:
            if type(request) is Undecodable:
                await _refuse(warn, method, request, context)
            async for response in inner(request, context):
                yield response

        return gen

    async def call(request: Any, context: Any) -> Any:
        if type(request) is Undecodable:
            await _refuse(warn, method, request, context)
        return await inner(request, context)

    return call


class _DecodingContext:
    """The call's context, whose `read()` raises `UndecodableRequest` in place of the marker."""

    __slots__ = ("_context", "_method", "_warn")

    def __init__(self, context: Any, method: str, warn: RateLimitedLog) -> None:
        self._context = context
        self._method = method
        self._warn = warn

    async def read(self) -> Any:
        request = await self._context.read()
        if type(request) is Undecodable:
            _warn(self._warn, self._method, request, self._context)
            raise request.error()
        return request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


async def _checked(
    requests: AsyncIterator[Any], method: str, warn: RateLimitedLog, context: Any
) -> AsyncIterator[Any]:
    async for request in requests:
        if type(request) is Undecodable:
            _warn(warn, method, request, context)
            raise request.error()
        yield request


def _streamed(method: str, inner: Any, warn: RateLimitedLog) -> Any:
    """Requests streamed in: an `UndecodableRequest` the handler lets through ends the call."""
    if inspect.isasyncgenfunction(inner):

        async def gen(requests: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for response in inner(
                    _checked(requests, method, warn, context),
                    _DecodingContext(context, method, warn),
                ):
                    yield response
            except UndecodableRequest as exc:
                await context.abort_with_status(to_status(exc))

        return gen

    async def call(requests: Any, context: Any) -> Any:
        try:
            return await inner(
                _checked(requests, method, warn, context),
                _DecodingContext(context, method, warn),
            )
        except UndecodableRequest as exc:
            await context.abort_with_status(to_status(exc))

    return call
