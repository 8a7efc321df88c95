"""One structured log line per RPC: method, status code, duration, peer."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc

log = logging.getLogger("parleyd.rpc")


def _code_name(context: Any, fallback: str) -> str:
    code = context.code()
    if code is None:
        return fallback
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    try:
        return str(grpc.StatusCode(code).name)
    except Exception:
        return str(code)


def with_call_log(method: str, handler: Any) -> Any:
    """`handler` that also logs one line per call; built once per method at startup.

    Unary-unary and stream-stream handlers are logged; other kinds are returned unchanged.
    """
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _logged_call(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _logged_stream(method, handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class MethodTable(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The server's handlers, each wrapped once: with the call log and without it.

    grpc asks `service()` for every call; it hands out the logged handler while the
    `parleyd.rpc` logger is enabled for INFO (checked per call, so the level may change at run
    time) and the bare one otherwise. No interceptor runs and nothing is built per call.
    """

    def __init__(self, handlers: Mapping[str, Any]) -> None:
        self._plain = dict(handlers)
        self._logged = {method: with_call_log(method, h) for method, h in handlers.items()}

    def service(self, handler_call_details: Any) -> Any:
        if log.isEnabledFor(logging.INFO):
            return self._logged.get(handler_call_details.method)
        return self._plain.get(handler_call_details.method)


def _logged_stream(method: str, inner: Any) -> Any:
    # A streaming handler is either an async generator (yields responses) or a coroutine that
    # writes with context.write(); the wrapper must be of the same kind.
    if inspect.isasyncgenfunction(inner):

        async def gen(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            start = time.perf_counter()
            outcome = "OK"
            try:
                async for response in inner(requests, context):
                    yield response
            except BaseException as exc:
                outcome = _outcome(exc)
                raise
            finally:
                _emit(method, _code_name(context, outcome), start, context)

        return gen

    return _logged_call(method, inner)


def _logged_call(method: str, inner: Any) -> Any:
    """A coroutine handler (unary, or streaming with context.write()) that logs its outcome."""

    async def call(request_or_iterator: Any, context: Any) -> Any:
        start = time.perf_counter()
        outcome = "OK"
        try:
            return await inner(request_or_iterator, context)
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            _emit(method, _code_name(context, outcome), start, context)

    return call


def _outcome(exc: BaseException) -> str:
    return "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "INTERNAL"


def _emit(method: str, code: str, start: float, context: Any) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    # What log.info() does, without its stack walk to find the caller (it is always here).
    record = log.makeRecord(
        log.name,
        logging.INFO,
        __file__,
        0,
        "rpc",
        (),
        None,
        "_emit",
        {
            "rpc_method": method,
            "rpc_code": code,
            "duration_ms": round((time.perf_counter() - start) * 1000, 2),
            "peer": context.peer(),
        },
    )
    log.handle(record)
