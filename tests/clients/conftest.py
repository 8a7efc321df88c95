"""Fixtures of the client tests: a real `parleyd serve` process and the clients' commands.

The server is a subprocess on 127.0.0.1:0 over a fresh SQLite file (tests/support/process.py),
shared by the whole run; each test uses data of its own.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.process import API_KEY, ParleydProcess, running_parleyd
from tests.support.tools import grpcurl_command, node_command, tool

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"


@pytest.fixture(scope="session")
def parleyd_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParleydProcess]:
    """One `parleyd serve` subprocess shared by the client tests (each test uses its own data)."""
    with running_parleyd(tmp_path_factory.mktemp("parleyd")) as server:
        if not server.dev_api_key:
            pytest.fail(
                "first start on an empty database printed no DEVELOPMENT API KEY:\n"
                + "\n".join(server.stdout_lines)
            )
        yield server


@pytest.fixture(scope="session")
def second_api_key(parleyd_proc: ParleydProcess) -> str:
    """Another key, made with `parleyd keys create` against the running server's database."""
    exe = tool("parleyd")
    assert exe is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEYD_")}
    cmd = [exe, "keys", "create", "--name", "clients-other"]
    done = subprocess.run(
        [*cmd, "--database-url", parleyd_proc.database_url],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    m = API_KEY.search(done.stdout)
    assert m is not None, f"no pk_ key on stdout: {done.stdout!r}"
    return m.group(1)


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` command with @grpc/grpc-js and @grpc/proto-loader installed (`make node-deps`):
    the tests that take it skip without them, saying why, unless CI is set: then they fail."""
    return node_command()


@pytest.fixture(scope="session")
def grpcurl_bin() -> str:
    return grpcurl_command()
