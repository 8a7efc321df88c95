"""Errors a caller can cause, named by what went wrong rather than by a transport's status code.

Each error has an `ErrorKind`; every transport maps a kind to exactly one of its own codes
(`grpc/status.py` to a gRPC status, `webrtc/signalling.py` to an HTTP status), so nothing below
the transports knows any of them. See docs/architecture.md, "Errors".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorKind(StrEnum):
    """What kind of mistake the caller made; the value is the ErrorInfo reason sent to clients."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field: `field` is a dotted path as the caller spelled the request."""

    field: str
    description: str


class ParleyError(Exception):
    """Base of every error that is the caller's doing (never INTERNAL or UNKNOWN)."""

    kind: ErrorKind = ErrorKind.FAILED_PRECONDITION

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def reason(self) -> str:
        return self.kind.value


class InvalidArgument(ParleyError):
    kind = ErrorKind.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation] | FieldViolation) -> None:
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(summary)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls(FieldViolation(field, description))


class NotFound(ParleyError):
    kind = ErrorKind.NOT_FOUND


class FailedPrecondition(ParleyError):
    kind = ErrorKind.FAILED_PRECONDITION


class Unauthenticated(ParleyError):
    kind = ErrorKind.UNAUTHENTICATED


class AlreadyExists(ParleyError):
    kind = ErrorKind.ALREADY_EXISTS


class ResourceExhausted(ParleyError):
    kind = ErrorKind.RESOURCE_EXHAUSTED
