"""A Node.js client (@grpc/grpc-js + @grpc/proto-loader on the repo's proto/) against parleyd.

Needs `node` and tests/clients/node/node_modules (`make node-deps`): the `node` fixture of
conftest.py skips without them, saying why, unless CI is set: then it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from tests.clients.conftest import PROTO_DIR
from tests.support.process import ParleydProcess
from tests.support.tools import NODE_DIR

CLIENT = NODE_DIR / "client.js"
NODE_TIMEOUT_S = 60


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
