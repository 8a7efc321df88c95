"""A Node.js client (@grpc/grpc-js + @grpc/proto-loader on the repo's proto/) against parleyd.

Needs `node` and tests/clients/node/node_modules (`make node-deps`). Without them the tests skip,
saying why, unless CI is set: then they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import PROTO_DIR, ParleydProcess

NODE_DIR = Path(__file__).resolve().parent / "node"
CLIENT = NODE_DIR / "client.js"
NODE_TIMEOUT_S = 60
REQUIRED_MODULES = ("@grpc/grpc-js", "@grpc/proto-loader")


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "the `node` command is not installed (run `make system-deps`)"
    absent = [m for m in REQUIRED_MODULES if not (NODE_DIR / "node_modules" / m).is_dir()]
    if absent:
        return f"{', '.join(absent)} not in {NODE_DIR / 'node_modules'} (run `make node-deps`)"
    return None


@pytest.fixture(scope="module")
def node() -> str:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    exe = shutil.which("node")
    assert exe is not None
    return exe


def run_client(node: str, target: str, api_key: str) -> tuple[int, dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEYD_")}
    env["PARLEYD_PROTO_DIR"] = str(PROTO_DIR)
    done = subprocess.run(
        [node, str(CLIENT), target, api_key],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        cwd=NODE_DIR,
        env=env,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line on stdout:\n{done.stdout}\n{done.stderr}"
    return done.returncode, json.loads(lines[0]), done.stderr


def test_node_client_create_get_list_terminate(node: str, parleyd_proc: ParleydProcess) -> None:
    rc, out, stderr = run_client(node, parleyd_proc.target, parleyd_proc.dev_api_key)
    assert rc == 0, f"{out}\n{stderr}\n--- server log ---\n{parleyd_proc.log()[-3000:]}"
    assert out["ok"] is True, f"{out}\n{stderr}"

    created, got, listed, ended = out["create"], out["get"], out["list"], out["terminate"]
    sid = created["id"]
    assert sid.startswith("sess_")
    assert created["agent_id"] == "node-npc"
    assert created["user_id"] == "node-user"
    assert created["state"] == "SESSION_STATE_CREATED"
    assert created["end_reason"] == "END_REASON_UNSPECIFIED"
    assert created["metadata"] == {"client": "node", "run": out["run"]}
    assert created["has_create_time"] is True
    assert created["has_end_time"] is False
    assert created["access_token_prefix"] == "pat_"
    assert created["grpc_target"] == parleyd_proc.target

    assert got["id"] == sid
    assert got["state"] == "SESSION_STATE_CREATED"
    assert got["metadata"] == created["metadata"]

    assert listed["ids"] == [sid]
    assert listed["next_page_token"] == ""

    assert ended["id"] == sid
    assert ended["state"] == "SESSION_STATE_TERMINATED"
    assert ended["end_reason"] == "END_REASON_TERMINATED"
    assert ended["has_end_time"] is True

    assert out["terminate_again"]["name"] == "FAILED_PRECONDITION"
    assert out["terminate_again"]["code"] == 9
    assert out["no_key"]["name"] == "UNAUTHENTICATED"
    assert out["no_key"]["code"] == 16


def test_node_client_fails_loudly_on_a_bad_key(node: str, parleyd_proc: ParleydProcess) -> None:
    rc, out, _ = run_client(node, parleyd_proc.target, "pk_not-a-real-key")
    assert rc != 0
    assert out["ok"] is False
    assert "UNAUTHENTICATED" in out["error"] or "16" in out["error"], out
    assert "create" not in out
