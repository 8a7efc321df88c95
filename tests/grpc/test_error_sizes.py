"""An error is always small enough for every client to read it.

gRPC clients refuse more than 8 KiB of response metadata by default, and a status travels in the
trailers twice: its message percent-encoded in grpc-message, and the whole google.rpc.Status in
grpc-status-details-bin (base64). Before issue 11 an UpdateSession naming 100,000 unknown
update_mask paths answered with 7.3 MB of trailers, 3,000 paths of 1 KB with 3.2 MB, and a
CreateSession with 3,000 metadata keys over 64 characters with 234 KB: clients saw
RESOURCE_EXHAUSTED instead of the error. Now the mask and the metadata are refused before their
items are looked at, at most FIELD_VIOLATIONS_REPORTED_MAX violations are listed (then how many
more there were), each clipped to FIELD_VIOLATION_TEXT_MAX_CHARS, and the whole status fits
ERROR_DETAILS_MAX_BYTES.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2, status_pb2
from parley.v1 import session_pb2
from parley.v1 import session_service_pb2 as pb

from parleyd.domain import limits
from parleyd.domain.errors import FieldViolation, InvalidArgument, NotFound
from parleyd.grpc.status import to_status
from tests.grpc import db_snapshot, rpc_error, status_details
from tests.support.server import Running, serving
from tests.support.sessions import create
from tests.support.tools import grpcurl_command

# The server is shared by the module: its tests run on the module's event loop.
on_module_loop = pytest.mark.asyncio(loop_scope="module")

S = session_pb2.Session
Item = session_pb2.SceneItem
INVALID = grpc.StatusCode.INVALID_ARGUMENT
CLIENT_METADATA_MAX = 8 * 1024  # grpc-core's (and grpc-go's, grpc-java's) default
GRPCURL_INVALID_ARGUMENT_EXIT = 64 + 3


def percent_encoded_size(message: str) -> int:
    """Bytes of grpc-message on the wire: bytes outside 0x20..0x7E, and %, take three."""
    return sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in message.encode())


def trailers_size(err: grpc.aio.AioRpcError) -> int:
    """Bytes of the error's trailers as sent: names, values (binary ones in base64), message."""
    size = len("grpc-status") + 2 + len("grpc-message") + percent_encoded_size(err.details() or "")
    for key, value in err.trailing_metadata() or ():
        raw = len(value) if isinstance(value, bytes) else len(value.encode())
        size += len(key) + (4 * math.ceil(raw / 3) if key.endswith("-bin") else raw)
    return size


def bad_request(status: status_pb2.Status) -> error_details_pb2.BadRequest:
    found = [d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    assert len(found) == 1, status
    bad = error_details_pb2.BadRequest()
    found[0].Unpack(bad)
    return bad


def assert_small(status: status_pb2.Status, violations: int) -> error_details_pb2.BadRequest:
    """The status fits its limits, and its BadRequest lists what it must."""
    assert status.ByteSize() <= limits.ERROR_DETAILS_MAX_BYTES
    assert len(status.message.encode()) <= 512
    bad = bad_request(status)
    listed = bad.field_violations
    assert 1 <= len(listed) <= limits.FIELD_VIOLATIONS_REPORTED_MAX + 1
    for v in listed:
        assert len(v.field) <= limits.FIELD_VIOLATION_TEXT_MAX_CHARS
        assert len(v.description) <= limits.FIELD_VIOLATION_TEXT_MAX_CHARS
    if violations > len(listed):
        rest = violations - (len(listed) - 1)
        assert listed[-1].field == ""
        assert listed[-1].description == f"and {rest} more violations not listed"
    else:
        assert len(listed) == violations
    return bad


# -- to_status, in process --------------------------------------------------------------------


def test_a_hundred_thousand_violations_make_a_small_status() -> None:
    err = InvalidArgument(
        [
            FieldViolation("update_mask.paths", f"unknown field '{'p' * 1_000}{i}'")
            for i in range(100_000)
        ]
    )
    status = status_pb2.Status.FromString(
        dict(to_status(err).trailing_metadata)["grpc-status-details-bin"]
    )
    bad = assert_small(status, 100_000)
    # 20 violations of 200-character descriptions would not fit in 4 KiB: as many as fit.
    listed = len(bad.field_violations) - 1
    assert 10 <= listed <= limits.FIELD_VIOLATIONS_REPORTED_MAX
    assert bad.field_violations[0].description.endswith("...")
    assert (
        bad.field_violations[-1].description == f"and {100_000 - listed} more violations not listed"
    )
    assert status.message.endswith("...")


def test_the_byte_budget_lists_fewer_when_each_is_long() -> None:
    # 20 violations of 2 x 200 four-byte characters would be 32 KB: fewer are listed.
    long = "\U0001f600" * 500
    err = InvalidArgument([FieldViolation(long, long) for _ in range(30)])
    status = status_pb2.Status.FromString(
        dict(to_status(err).trailing_metadata)["grpc-status-details-bin"]
    )
    bad = assert_small(status, 30)
    assert 1 <= len(bad.field_violations) - 1 < limits.FIELD_VIOLATIONS_REPORTED_MAX


def test_few_short_violations_are_reported_whole() -> None:
    err = InvalidArgument([FieldViolation("session.agent_id", "is required")])
    grpc_status = to_status(err)
    assert grpc_status.details == "session.agent_id: is required"
    status = status_pb2.Status.FromString(
        dict(grpc_status.trailing_metadata)["grpc-status-details-bin"]
    )
    assert [(v.field, v.description) for v in bad_request(status).field_violations] == [
        ("session.agent_id", "is required")
    ]


def test_other_errors_clip_their_message() -> None:
    grpc_status = to_status(NotFound("session " + "\u00e9" * 10_000 + " not found"))
    assert len(grpc_status.details.encode()) <= 512
    assert grpc_status.details.endswith("...")


def random_violations(rng: random.Random) -> list[FieldViolation]:
    """Up to 200 violations, texts of up to 2,000 characters from anywhere in Unicode."""

    def text() -> str:
        top = rng.choice([0x7F, 0x7FF, 0xFFFF, 0x10FFFF])
        chars = (chr(rng.randint(0x20, top)) for _ in range(rng.choice([0, 10, 200, 2_000])))
        return "".join(c for c in chars if not 0xD800 <= ord(c) <= 0xDFFF)

    return [FieldViolation(text(), text()) for _ in range(rng.randint(1, 200))]


def test_no_violations_make_a_status_over_its_limit() -> None:
    rng = random.Random(11)
    for _ in range(60):
        violations = random_violations(rng)
        grpc_status = to_status(InvalidArgument(violations))
        blob = dict(grpc_status.trailing_metadata)["grpc-status-details-bin"]
        status = status_pb2.Status.FromString(blob)
        assert_small(status, len(violations))
        wire = percent_encoded_size(grpc_status.details) + 4 * math.ceil(len(blob) / 3)
        assert wire < CLIENT_METADATA_MAX - 512


# -- the repros on a real server --------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('error_sizes') / 'parleyd.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(module_database_url: str) -> AsyncIterator[tuple[Running, str]]:
    """A server and one session of its key, for the whole module: no case changes anything."""
    async with serving(module_database_url) as r:
        created = await create(r, situation="A tavern.", metadata={"mood": "calm"})
        yield r, created.session.id


async def refused(r: Running, call: Any) -> tuple[grpc.aio.AioRpcError, status_pb2.Status]:
    """The INVALID_ARGUMENT a call ends with, checked small, and that nothing was stored."""
    before = await db_snapshot(r, [r.key_id])
    err = await rpc_error(call)
    assert err.code() == INVALID, err
    assert trailers_size(err) < CLIENT_METADATA_MAX
    status = status_details(err)
    assert status is not None
    assert await db_snapshot(r, [r.key_id]) == before
    return err, status


def update(sid: str, paths: list[str]) -> pb.UpdateSessionRequest:
    return pb.UpdateSessionRequest(
        session=S(id=sid, profile="gruff"), update_mask=FieldMask(paths=paths)
    )


@on_module_loop
async def test_update_with_100000_unknown_mask_paths(server: tuple[Running, str]) -> None:
    r, sid = server
    paths = [f"p{i}" for i in range(100_000)]
    err, status = await refused(r, r.stub.UpdateSession(update(sid, paths), metadata=r.md()))
    bad = assert_small(status, 1)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("update_mask.paths", f"has 100000 paths; the limit is {limits.UPDATE_MASK_PATHS_MAX}")
    ]
    assert (
        err.details()
        == f"update_mask.paths: has 100000 paths; the limit is {limits.UPDATE_MASK_PATHS_MAX}"
    )


@on_module_loop
async def test_update_with_3000_mask_paths_of_1_kb(server: tuple[Running, str]) -> None:
    r, sid = server
    paths = [f"{'x' * 1_000}{i}" for i in range(3_000)]
    _, status = await refused(r, r.stub.UpdateSession(update(sid, paths), metadata=r.md()))
    assert [v.field for v in assert_small(status, 1).field_violations] == ["update_mask.paths"]


@on_module_loop
async def test_mask_paths_at_the_limit_are_each_reported_capped(
    server: tuple[Running, str],
) -> None:
    r, sid = server
    paths = [f"{'x' * 1_000}{i}" for i in range(limits.UPDATE_MASK_PATHS_MAX)]
    _, status = await refused(r, r.stub.UpdateSession(update(sid, paths), metadata=r.md()))
    bad = assert_small(status, limits.UPDATE_MASK_PATHS_MAX)
    listed = bad.field_violations
    assert len(listed) <= limits.FIELD_VIOLATIONS_REPORTED_MAX + 1
    assert {v.field for v in listed[:-1]} == {"update_mask.paths"}
    assert listed[0].description.startswith("unknown or non-writable field 'xxx")
    assert listed[0].description.endswith("...")


@on_module_loop
async def test_create_with_3000_long_metadata_keys(server: tuple[Running, str]) -> None:
    r, _ = server
    metadata = {f"{'k' * 70}{i}": "v" for i in range(3_000)}
    _, status = await refused(r, create(r, metadata=metadata))
    bad = assert_small(status, 1)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("session.metadata", f"has 3000 pairs; the limit is {limits.METADATA_MAX_PAIRS}")
    ]


@on_module_loop
async def test_create_with_every_field_wrong_lists_the_first_and_counts_the_rest(
    server: tuple[Running, str],
) -> None:
    r, _ = server
    scene = [Item(name="n" * 2_000, description="d" * 2_000) for _ in range(limits.SCENE_MAX_ITEMS)]
    metadata = {f"{'k' * 1_000}{i}": "v" * 1_000 for i in range(limits.METADATA_MAX_PAIRS)}
    # 64 names, 64 descriptions, 64 keys and 64 values too long, and a template too.
    _, status = await refused(r, create(r, scene=scene, metadata=metadata, user_id="u" * 5_000))
    bad = assert_small(status, 1 + 4 * 64)
    assert bad.field_violations[0].field == "session.user_id"


@on_module_loop
async def test_grpcurl_reads_such_an_error(server: tuple[Running, str]) -> None:
    """The real grpcurl (an operator's tool, Go's gRPC) gets the status, not RESOURCE_EXHAUSTED."""
    r, sid = server
    many = {"session": {"id": sid}, "updateMask": {"paths": [f"p{i}" for i in range(100_000)]}}
    long = {
        "session": {"id": sid},
        "updateMask": {"paths": [f"{'x' * 1_000}{i}" for i in range(32)]},
    }
    for body, expected in (
        (many, f"update_mask.paths: has 100000 paths; the limit is {limits.UPDATE_MASK_PATHS_MAX}"),
        (long, "update_mask.paths: unknown or non-writable field 'xxx"),
    ):
        proc = await asyncio.create_subprocess_exec(
            grpcurl_command(),
            "-plaintext",
            "-format-error",
            "-max-time",
            "20",
            "-H",
            f"x-api-key: {r.api_key}",
            "-d",
            "@",
            r.target,
            "parley.v1.SessionService/UpdateSession",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(json.dumps(body).encode()), 60)
        err = stderr.decode()
        assert proc.returncode == GRPCURL_INVALID_ARGUMENT_EXIT, err[:2_000]
        status = json.loads(err[err.index("{") :])
        assert status["code"] == 3
        assert status["message"].startswith(expected), status["message"][:600]
        (bad,) = [d for d in status["details"] if d["@type"].endswith("google.rpc.BadRequest")]
        violations = bad["field_violations"]
        assert 1 <= len(violations) <= limits.FIELD_VIOLATIONS_REPORTED_MAX + 1
        if len(violations) > 1:
            assert violations[-1]["description"].endswith("more violations not listed")
