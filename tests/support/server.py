"""The in-process server of the tests: started on 127.0.0.1:0 with an API key of its own.

This is the only module in tests/ that builds the server: fixtures everywhere call `serving` (or
`start_server`) with the settings they need.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from parley.v1 import session_service_pb2_grpc

from parleyd.app import App
from parleyd.config import Settings
from parleyd.manager import wall_clock_ms
from parleyd.store import Repository
from tests.support.sessions import Client


@dataclass
class Running(Client):
    """A started in-process server, a channel to it, and an API key of its own."""

    server: App
    channel: grpc.aio.Channel
    key_id: str

    @property
    def repo(self) -> Repository:
        assert self.server.repo is not None
        return self.server.repo

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def new_key(self, name: str = "other", max_s: int = 3600) -> str:
        _, plaintext = await self.repo.create_api_key(
            name=name, max_session_duration_ms=max_s * 1000, now_ms=wall_clock_ms()
        )
        return plaintext

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(0.2)


def settings_for(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test server: loopback, port 0, quick timers, quiet log, engine off."""
    return Settings(
        host="127.0.0.1",
        port=0,
        database_url=database_url,
        expiry_interval_ms=overrides.pop("expiry_interval_ms", 100),
        drain_timeout_ms=overrides.pop("drain_timeout_ms", 500),
        log_level="WARNING",
        # The built-in engine loads speech models: only the tests that talk to it turn it on.
        engine=overrides.pop("engine", "off"),
        http_port=overrides.pop("http_port", 0),  # never the fixed default port in tests
        **overrides,
    )


async def start_server(database_url: str, **overrides: Any) -> Running:
    """Starts a server with `overrides` of the test settings; the caller closes it."""
    server = App(settings_for(database_url, **overrides))
    await server.start()
    try:
        assert server.repo is not None
        key, plaintext = await server.repo.create_api_key(
            name=f"test-{secrets.token_hex(3)}",
            max_session_duration_ms=3_600_000,
            now_ms=wall_clock_ms(),
        )
    except BaseException:
        await server.stop(0.2)
        raise
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = session_service_pb2_grpc.SessionServiceStub(channel)
    return Running(stub, plaintext, server, channel, key.id)


@contextlib.asynccontextmanager
async def serving(database_url: str, **overrides: Any) -> AsyncIterator[Running]:
    """A started server for the length of the block (what the fixtures yield)."""
    r = await start_server(database_url, **overrides)
    try:
        yield r
    finally:
        await r.close()
