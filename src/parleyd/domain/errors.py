"""Errors a caller can cause, named by what went wrong rather than by a transport's status code.

Each error has an `ErrorKind`; every transport maps a kind to exactly one of its own codes
(`grpc/status.py` to a gRPC status, `webrtc/signalling.py` to an HTTP status), so nothing below
the transports knows any of them. See docs/architecture.md, "Errors".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from parleyd.domain import limits


class ErrorKind(StrEnum):
    """What went wrong (a mistake of the caller, or UNAVAILABLE: the server cannot do it right
    now and the caller should try again); the value is the ErrorInfo reason sent to clients."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field: `field` is a dotted path as the caller spelled the request."""

    field: str
    description: str


class ParleyError(Exception):
    """Base of every error a caller is told about as it is (never INTERNAL or UNKNOWN): its own
    mistakes, and `Unavailable`, which is nobody's mistake and worth a retry."""

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
        # Every violation stays here; what is reported (the message, a transport's details) is
        # capped, so a request with thousands of mistakes still gets a small answer.
        summary = "; ".join(
            f"{v.field}: {v.description}" if v.field else v.description
            for v in capped_violations(self.violations)
        )
        super().__init__(summary)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls(FieldViolation(field, description))


def clip_text(text: str, max_chars: int = limits.FIELD_VIOLATION_TEXT_MAX_CHARS) -> str:
    """`text`, cut to at most `max_chars` characters ("..." marks a cut)."""
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - 3)] + "..."


def capped_violations(
    violations: Sequence[FieldViolation],
    max_count: int = limits.FIELD_VIOLATIONS_REPORTED_MAX,
    max_chars: int = limits.FIELD_VIOLATION_TEXT_MAX_CHARS,
) -> list[FieldViolation]:
    """What to report of `violations`: the first `max_count`, field and description clipped to
    `max_chars`, then (if any were left out) one more, with no field, saying how many."""
    shown = [
        FieldViolation(clip_text(v.field, max_chars), clip_text(v.description, max_chars))
        for v in violations[:max_count]
    ]
    left_out = len(violations) - len(shown)
    if left_out > 0:
        shown.append(omitted(left_out))
    return shown


def omitted(count: int) -> FieldViolation:
    """The violation that stands for `count` more that are not listed."""
    noun = "violation" if count == 1 else "violations"
    return FieldViolation("", f"and {count} more {noun} not listed")


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


class Unavailable(ParleyError):
    """The server cannot do it right now, through no fault of the caller, who should retry: the
    database is unreachable or cannot be written (the store raises it; see store/database.py)."""

    kind = ErrorKind.UNAVAILABLE
