"""Maps domain errors to gRPC statuses with google.rpc details (BadRequest, ErrorInfo)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from parleyd.domain import errors, limits

ERROR_DOMAIN = "parley.dev"
# The status message travels twice: percent-encoded in grpc-message (up to 3 bytes per byte) and
# inside grpc-status-details-bin (base64, 4 bytes per 3). With the details at most
# ERROR_DETAILS_MAX_BYTES (4 KiB, message included), the trailers stay near 7 KiB at most: under
# the 8 KiB that gRPC clients accept by default.
_MESSAGE_MAX_BYTES = 512

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
    errors.ErrorKind.UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
}


def code_number(kind: errors.ErrorKind) -> int:
    """The google.rpc.Code number of `kind` (what a StreamError on the wire carries)."""
    return _CODES[kind][1]


def to_status(err: errors.ParleyError) -> grpc.Status:
    """The status of `err`, whole in at most ERROR_DETAILS_MAX_BYTES: the message is clipped, and
    a BadRequest lists the first violations (each clipped) and then how many more there were."""
    numeric = code_number(err.kind)
    message = _clip_utf8(err.message, _MESSAGE_MAX_BYTES)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN))
    status = status_pb2.Status(code=numeric, message=message)
    if isinstance(err, errors.InvalidArgument):
        room = limits.ERROR_DETAILS_MAX_BYTES - status.ByteSize() - info.ByteSize() - _OVERHEAD
        status.details.append(_bad_request(err.violations, room))
    status.details.append(info)
    return rpc_status.to_status(status)


# Tags, lengths and type URLs around the details; generous.
_OVERHEAD = 96


def _bad_request(violations: list[errors.FieldViolation], room: int) -> any_pb2.Any:
    """A packed BadRequest of at most `room` bytes: as many of the capped violations as fit, and
    the count of the rest."""
    shown = errors.capped_violations(violations)
    listed = shown[:-1] if len(shown) > limits.FIELD_VIOLATIONS_REPORTED_MAX else shown
    # Room for the last entry ("and N more violations not listed") is kept in any case.
    room -= _entry_size(errors.omitted(len(violations)))
    bad = error_details_pb2.BadRequest()
    for v in listed:
        size = _entry_size(v)
        if size > room:
            break
        room -= size
        bad.field_violations.add(field=v.field, description=v.description)
    left_out = len(violations) - len(bad.field_violations)
    if left_out > 0:
        rest = errors.omitted(left_out)
        bad.field_violations.add(field=rest.field, description=rest.description)
    packed = any_pb2.Any()
    packed.Pack(bad)
    return packed


def _entry_size(v: errors.FieldViolation) -> int:
    entry = error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
    return int(entry.ByteSize()) + 4  # its tag and length in the BadRequest


def _clip_utf8(text: str, max_bytes: int) -> str:
    """`text` in at most `max_bytes` of UTF-8, cut at a character ("..." marks a cut)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return data.decode("utf-8")
    return data[: max_bytes - 3].decode("utf-8", "ignore") + "..."
