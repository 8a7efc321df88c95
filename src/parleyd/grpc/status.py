"""Maps domain errors to gRPC statuses with google.rpc details (BadRequest, ErrorInfo)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from parleyd.domain import errors

ERROR_DOMAIN = "parley.dev"

_CODES: dict[errors.ErrorKind, tuple[grpc.StatusCode, int]] = {
    errors.ErrorKind.INVALID_ARGUMENT: (
        grpc.StatusCode.INVALID_ARGUMENT,
        code_pb2.INVALID_ARGUMENT,
    ),
    errors.ErrorKind.NOT_FOUND: (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    errors.ErrorKind.FAILED_PRECONDITION: (
        grpc.StatusCode.FAILED_PRECONDITION,
        code_pb2.FAILED_PRECONDITION,
    ),
    errors.ErrorKind.UNAUTHENTICATED: (grpc.StatusCode.UNAUTHENTICATED, code_pb2.UNAUTHENTICATED),
    errors.ErrorKind.ALREADY_EXISTS: (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    errors.ErrorKind.RESOURCE_EXHAUSTED: (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        code_pb2.RESOURCE_EXHAUSTED,
    ),
}


def code_number(kind: errors.ErrorKind) -> int:
    """The google.rpc.Code number of `kind` (what a StreamError on the wire carries)."""
    return _CODES[kind][1]


def to_status(err: errors.ParleyError) -> grpc.Status:
    numeric = code_number(err.kind)
    details: list[any_pb2.Any] = []
    if isinstance(err, errors.InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in err.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN))
    details.append(info)
    status = status_pb2.Status(code=numeric, message=err.message, details=details)
    return rpc_status.to_status(status)
