"""API-key authentication for SessionService's management calls.

`with_api_key` wraps a method's handler once, when the server starts (no interceptor runs per
call). The wrapper resolves `x-api-key` once per call and hands the key to the servicer through a
context variable: it runs in the same task as the servicer method.
"""

from __future__ import annotations

import contextvars
from typing import Any

import grpc

from parleyd.domain.errors import ParleyError
from parleyd.domain.session import ApiKey
from parleyd.grpc.status import to_status
from parleyd.manager import SessionManager

API_KEY_HEADER = "x-api-key"

# Services a client may call without a key: discovery and health checks.
_EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
# Methods that authenticate by a session's access token instead of an API key.
TOKEN_METHODS: frozenset[str] = frozenset({"/parley.v1.SessionService/Interact"})


class Caller:
    __slots__ = ("key", "plaintext")

    def __init__(self, key: ApiKey, plaintext: str) -> None:
        self.key = key
        self.plaintext = plaintext


_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("parleyd_caller")


def current_caller() -> Caller:
    """The authenticated caller of the running RPC (set by the with_api_key wrapper)."""
    return _CALLER.get()


def needs_api_key(method: str, handler: Any) -> bool:
    """Whether calls of `method` must carry an API key (every management RPC does)."""
    return not (
        method.startswith(_EXEMPT_PREFIXES)
        or method in TOKEN_METHODS
        or handler.unary_unary is None
    )


def with_api_key(handler: Any, manager: SessionManager) -> Any:
    """`handler` (unary-unary) behind API-key authentication. Built once per method at startup.

    The key in `x-api-key` is resolved once per call and handed to the servicer through a
    context variable. Undecodable request bytes reach `inner` as grpc/_decode.py's marker, which
    it answers INVALID_ARGUMENT: the key is checked first, so a caller without one learns nothing.
    """
    inner = handler.unary_unary

    async def authenticated(request: Any, context: Any) -> Any:
        plaintext = ""
        for item in context.invocation_metadata() or ():
            if item[0] == API_KEY_HEADER:
                plaintext = str(item[1])
                break
        try:
            key = await manager.authenticate(plaintext)
        except ParleyError as exc:  # a bad key, or the database cannot be asked (UNAVAILABLE)
            await context.abort_with_status(to_status(exc))
            raise AssertionError("unreachable") from None
        token = _CALLER.set(Caller(key, plaintext))
        try:
            return await inner(request, context)
        finally:
            _CALLER.reset(token)

    return grpc.unary_unary_rpc_method_handler(
        authenticated,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
