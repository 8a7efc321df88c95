"""Errors a caller can cause, named by what went wrong rather than by a transport's status code.

The gRPC layer maps each class to exactly one status code (see DESIGN.md, "Contract rules").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field: `field` is a dotted path as the caller spelled the request."""

    field: str
    description: str


class ParleyError(Exception):
    """Base of every error that is the caller's doing (never INTERNAL or UNKNOWN)."""

    reason: str = "PARLEY_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ParleyError):
    reason = "INVALID_ARGUMENT"

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
    reason = "NOT_FOUND"


class FailedPrecondition(ParleyError):
    reason = "FAILED_PRECONDITION"


class Unauthenticated(ParleyError):
    reason = "UNAUTHENTICATED"


class AlreadyExists(ParleyError):
    reason = "ALREADY_EXISTS"


class ResourceExhausted(ParleyError):
    reason = "RESOURCE_EXHAUSTED"
