"""One structured log line per RPC: method, status code, duration, peer."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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


class CallLogInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or not log.isEnabledFor(logging.INFO):
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                start = time.perf_counter()
                outcome = "OK"
                try:
                    return await inner(request, context)
                except BaseException as exc:
                    outcome = _outcome(exc)
                    raise
                finally:
                    _emit(method, _code_name(context, outcome), start, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
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

    async def coro(requests: AsyncIterator[Any], context: Any) -> Any:
        start = time.perf_counter()
        outcome = "OK"
        try:
            return await inner(requests, context)
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            _emit(method, _code_name(context, outcome), start, context)

    return coro


def _outcome(exc: BaseException) -> str:
    return "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "INTERNAL"


def _emit(method: str, code: str, start: float, context: Any) -> None:
    log.info(
        "rpc",
        extra={
            "rpc_method": method,
            "rpc_code": code,
            "duration_ms": round((time.perf_counter() - start) * 1000, 2),
            "peer": context.peer(),
        },
    )
