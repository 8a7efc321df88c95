"""The server around SessionService: health, reflection, draining on stop, one log line per RPC."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from parley.v1 import session_service_pb2 as pb

from tests.grpc import rpc_error
from tests.support.server import Running, start_server
from tests.support.sessions import create, get_session
from tests.support.sqlite import sqlite_write_lock, writes_at_the_writer
from tests.support.waiting import wait_until

SERVICE = "parley.v1.SessionService"
HEALTH = health_pb2.HealthCheckResponse
RPC_METHODS = {
    "CreateSession",
    "GetSession",
    "ListSessions",
    "UpdateSession",
    "DisconnectSession",
    "TerminateSession",
    "ListMessages",
    "GetUsage",
    "Interact",
}


@pytest.fixture(params=["log-warning", "log-info"])
def rpc_log_level(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> int:
    """Runs a test with the per-RPC log off and on: with it on, every handler is wrapped."""
    level = logging.WARNING if request.param == "log-warning" else logging.INFO
    caplog.set_level(level, logger="parleyd.rpc")
    return level


async def reflect(
    channel: grpc.aio.Channel, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    """One raw reflection stream, without any credentials."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def gen() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        for r in requests:
            yield r

    call = stub.ServerReflectionInfo(gen())
    return [resp async for resp in call]


# -- health ------------------------------------------------------------------------------------


async def test_health_check_serving_without_a_key(running: Running) -> None:
    health = health_pb2_grpc.HealthStub(running.channel)
    for service in ("", SERVICE):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == HEALTH.SERVING, service
    err = await rpc_error(health.Check(health_pb2.HealthCheckRequest(service="no.Such")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    # A wrong key does not matter to health either.
    resp = await health.Check(health_pb2.HealthCheckRequest(), metadata=(("x-api-key", "nope"),))
    assert resp.status == HEALTH.SERVING


# -- reflection --------------------------------------------------------------------------------


async def test_reflection_lists_services_without_a_key(
    running_sqlite: Running, rpc_log_level: int
) -> None:
    responses = await reflect(
        running_sqlite.channel,
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
    )
    assert len(responses) == 2
    listed = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in responses[1].file_descriptor_response.file_descriptor_proto
    ]
    services = {
        f"{f.package}.{s.name}": {m.name for m in s.method} for f in files for s in f.service
    }
    assert services[SERVICE] >= RPC_METHODS


async def test_reflection_resolves_the_whole_contract(running: Running) -> None:
    """What grpcurl does: build a descriptor pool from reflection alone and find every type."""

    def resolve() -> set[str]:
        with grpc.insecure_channel(running.target) as channel:
            pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
            service = pool.FindServiceByName(SERVICE)
            methods = {m.name for m in service.methods}
            pool.FindMessageTypeByName("parley.v1.CreateSessionRequest")
            pool.FindMessageTypeByName("google.protobuf.FieldMask")
            return methods

    assert await asyncio.wait_for(asyncio.to_thread(resolve), timeout=10) >= RPC_METHODS


# -- draining ----------------------------------------------------------------------------------


async def test_stop_reports_not_serving_then_drains_calls_in_flight(sqlite_url: str) -> None:
    r = await start_server(sqlite_url)
    health = health_pb2_grpc.HealthStub(r.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    stop: asyncio.Task[None] | None = None
    try:
        assert (await asyncio.wait_for(watch.read(), 5)).status == HEALTH.SERVING
        existing = (await create(r)).session.id

        with sqlite_write_lock(sqlite_url):
            in_flight = asyncio.create_task(create(r, agent_id="late"))
            # The call is inside the server, its write waiting at the database's writer.
            await wait_until(
                lambda: writes_at_the_writer(r.repo._db),
                timeout_s=5,
                what="the CreateSession write at SQLite's writer",
            )
            assert not in_flight.done()

            stop = asyncio.create_task(r.server.stop(5.0))
            status = await asyncio.wait_for(watch.read(), 5)
            assert status.status == HEALTH.NOT_SERVING
            assert not in_flight.done()  # NOT_SERVING came first; the call is still running
            watch.cancel()  # an open Watch would itself hold the drain for the whole grace

            # New calls are refused while the call in flight is given its grace period.
            refusals: list[grpc.StatusCode] = []

            async def refused() -> bool:
                try:
                    await get_session(r, existing)
                except grpc.aio.AioRpcError as exc:
                    refusals.append(exc.code())
                    return True
                return False

            await wait_until(refused, timeout_s=5)
            # grpc-core refuses a call that races the shutdown with GOAWAY (UNAVAILABLE) or, when
            # the stream was already open, by resetting it (CANCELLED): both are refusals.
            assert len(refusals) == 1
            assert refusals[0] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            assert not in_flight.done()
        # The lock is released: the call in flight finishes normally within the grace period.
        late = await asyncio.wait_for(in_flight, 5)
        assert late.session.agent_id == "late"
        # Once nothing is in flight the drain ends, well before the 5 s grace is over.
        await asyncio.wait_for(stop, 2)
    finally:
        watch.cancel()
        await r.channel.close()
        if stop is None:
            await r.server.stop(0.2)

    conn = sqlite3.connect(sqlite_url.split(":///", 1)[1])
    try:
        rows = conn.execute("SELECT id FROM sessions WHERE agent_id = 'late'").fetchall()
    finally:
        conn.close()
    assert rows == [(late.session.id,)]


# -- per-RPC log -------------------------------------------------------------------------------


async def test_one_log_line_per_rpc(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="parleyd.rpc")
    r = running
    sid = (await create(r)).session.id
    await get_session(r, sid)
    await rpc_error(get_session(r, "sess_01ARZ3NDEKTSV4RRFFQ69G5FAV"))
    await rpc_error(r.stub.ListSessions(pb.ListSessionsRequest(page_token="junk"), metadata=r.md()))
    await rpc_error(r.stub.GetSession(pb.GetSessionRequest(session_id=sid)))  # no key
    await rpc_error(
        r.stub.TerminateSession(
            pb.TerminateSessionRequest(session_id=sid), metadata=r.md("pk_wrong")
        )
    )
    raw = r.channel.unary_unary("/parley.v1.SessionService/GetUsage")
    await rpc_error(raw(b"\x0f\x01", metadata=r.md()))
    await health_pb2_grpc.HealthStub(r.channel).Check(health_pb2.HealthCheckRequest())

    def lines() -> list[tuple[str, str]]:
        return [
            (rec.rpc_method, rec.rpc_code)  # type: ignore[attr-defined]
            for rec in caplog.records
            if rec.name == "parleyd.rpc"
        ]

    async def all_logged() -> bool:
        return len(lines()) >= 8

    await wait_until(all_logged, timeout_s=5)
    s = "/parley.v1.SessionService/"
    assert lines() == [
        (s + "CreateSession", "OK"),
        (s + "GetSession", "OK"),
        (s + "GetSession", "NOT_FOUND"),
        (s + "ListSessions", "INVALID_ARGUMENT"),
        (s + "GetSession", "UNAUTHENTICATED"),
        (s + "TerminateSession", "UNAUTHENTICATED"),
        (s + "GetUsage", "INVALID_ARGUMENT"),
        ("/grpc.health.v1.Health/Check", "OK"),
    ]
    for rec in caplog.records:
        if rec.name == "parleyd.rpc":
            assert rec.levelno == logging.INFO
            assert isinstance(rec.duration_ms, float | int)  # type: ignore[attr-defined]
            assert 0 <= rec.duration_ms < 5000  # type: ignore[attr-defined]
            assert "127.0.0.1" in rec.peer  # type: ignore[attr-defined]


async def test_log_line_of_a_call_the_client_gave_up_on(
    running_sqlite: Running, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="parleyd.rpc")
    r = running_sqlite

    def codes() -> list[str]:
        return [
            rec.rpc_code  # type: ignore[attr-defined]
            for rec in caplog.records
            if rec.name == "parleyd.rpc" and rec.rpc_method.endswith("/CreateSession")  # type: ignore[attr-defined]
        ]

    async def logged() -> bool:
        return len(codes()) == 1

    with sqlite_write_lock(sqlite_url):
        err = await rpc_error(
            r.stub.CreateSession(
                pb.CreateSessionRequest(session={"agent_id": "npc"}),
                metadata=r.md(),
                timeout=0.3,
            )
        )
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The handler unwinds once its database connection is free again, and says how it ended.
    await wait_until(logged, timeout_s=5)
    assert codes() == ["CANCELLED"]
