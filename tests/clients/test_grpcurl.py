"""The real grpcurl binary (an operator's debugging tool) against a running `parleyd serve`.

grpcurl learns the API by server reflection alone: no .proto files are given to it, except in the
one check that compares reflection with the proto sources.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from tests.clients.conftest import PROTO_DIR
from tests.support.process import ParleydProcess

SERVICE = "parley.v1.SessionService"
GRPCURL_TIMEOUT_S = 20

# grpcurl exits with 64 + the gRPC status code when the call fails with a status.
GRPCURL_STATUS_EXIT_BASE = 64
INVALID_ARGUMENT = 3
NOT_FOUND = 5
FAILED_PRECONDITION = 9
UNAUTHENTICATED = 16

# A documented field: the first words of its comment in proto/parley/v1/session.proto.
AGENT_ID_COMMENT = "The AI character (persona) the user talks to"


def timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp as grpcurl prints it (0, 3, 6 or 9 fractional digits, "Z")."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


@dataclass(frozen=True)
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, f"grpcurl {self.args} failed:\n{self.stderr}"
        return json.loads(self.stdout)

    def error(self) -> dict[str, Any]:
        """The status printed by `-format-error` (JSON on stderr), checked against the exit code."""
        assert self.returncode != 0, f"grpcurl {self.args} succeeded:\n{self.stdout}"
        start = self.stderr.find("{")
        assert start >= 0, f"no JSON status on stderr:\n{self.stderr}"
        status: dict[str, Any] = json.loads(self.stderr[start:])
        assert self.returncode == GRPCURL_STATUS_EXIT_BASE + status["code"], (
            self.returncode,
            status,
        )
        return status


class Grpcurl:
    def __init__(self, exe: str, server: ParleydProcess) -> None:
        self.exe = exe
        self.server = server

    def run(self, *args: str) -> Result:
        cmd = [self.exe, *args]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=GRPCURL_TIMEOUT_S, check=False
        )
        return Result(list(args), done.returncode, done.stdout, done.stderr)

    def reflect(self, *args: str) -> Result:
        return self.run("-plaintext", "-max-time", "10", self.server.target, *args)

    def call(self, method: str, body: dict[str, Any], key: str | None = None) -> Result:
        """Invokes SessionService/<method> with `body` as JSON and the dev key (key="" for none)."""
        api_key = self.server.dev_api_key if key is None else key
        headers = ["-H", f"x-api-key: {api_key}"] if api_key else []
        return self.run(
            "-plaintext",
            "-format-error",
            "-max-time",
            "10",
            *headers,
            "-d",
            json.dumps(body),
            self.server.target,
            f"{SERVICE}/{method}",
        )


@pytest.fixture
def grpcurl(grpcurl_bin: str, parleyd_proc: ParleydProcess) -> Grpcurl:
    return Grpcurl(grpcurl_bin, parleyd_proc)


def test_list_services_by_reflection_without_a_key(grpcurl: Grpcurl) -> None:
    res = grpcurl.reflect("list")
    assert res.returncode == 0, res.stderr
    services = res.stdout.split()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services

    methods = grpcurl.reflect("list", SERVICE).stdout.split()
    for name in ("CreateSession", "GetSession", "ListSessions", "UpdateSession"):
        assert f"{SERVICE}.{name}" in methods
    assert f"{SERVICE}.DisconnectSession" in methods
    assert f"{SERVICE}.TerminateSession" in methods


def test_health_check_without_a_key(grpcurl: Grpcurl) -> None:
    res = grpcurl.reflect("grpc.health.v1.Health/Check")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"status": "SERVING"}


def test_session_lifecycle(grpcurl: Grpcurl) -> None:
    run = uuid.uuid4().hex
    created = grpcurl.call(
        "CreateSession",
        {
            "session": {
                "agent_id": "blacksmith-npc",
                "user_id": "player-7",
                "situation": "A forge in a small village.",
                "metadata": {"run": run, "level": "3"},
            }
        },
    ).json()
    session = created["session"]
    sid = session["id"]
    assert sid.startswith("sess_")
    assert len(sid) == len("sess_") + 26
    assert session["agent_id"] == "blacksmith-npc"
    assert session["user_id"] == "player-7"
    assert session["state"] == "SESSION_STATE_CREATED"
    assert session["metadata"] == {"run": run, "level": "3"}
    assert session["connection_type"] == "CONNECTION_TYPE_AUDIO"
    assert session["rendered_situation"] == "A forge in a small village."
    assert "create_time" in session
    assert "end_time" not in session
    assert created["access_token"].startswith("pat_")
    assert created["connect"]["grpc_target"] == grpcurl.server.target

    got = grpcurl.call("GetSession", {"session_id": sid}).json()["session"]
    assert got["id"] == sid
    assert got["state"] == "SESSION_STATE_CREATED"
    assert got["metadata"] == {"run": run, "level": "3"}
    assert "access_token" not in json.dumps(got)

    listed = grpcurl.call("ListSessions", {"metadata": {"run": run}}).json()
    assert [s["id"] for s in listed.get("sessions", [])] == [sid]
    both = grpcurl.call("ListSessions", {"metadata": {"run": run, "level": "3"}}).json()
    assert [s["id"] for s in both.get("sessions", [])] == [sid]
    for miss in ({"run": run, "level": "4"}, {"run": uuid.uuid4().hex}):
        none = grpcurl.call("ListSessions", {"metadata": miss}).json()
        assert none.get("sessions", []) == [], miss

    # grpcurl 1.8.6 takes a FieldMask as {"paths": [...]} (not the "a,b" string form).
    updated = grpcurl.call(
        "UpdateSession",
        {
            "session": {"id": sid, "dynamic_info": "the player now carries the red key"},
            "update_mask": {"paths": ["dynamic_info"]},
        },
    ).json()["session"]
    assert updated["id"] == sid
    assert updated["dynamic_info"] == "the player now carries the red key"
    assert updated["state"] == "SESSION_STATE_CREATED"
    assert updated["metadata"] == {"run": run, "level": "3"}  # not in the mask: unchanged
    assert timestamp(updated["update_time"]) >= timestamp(got["update_time"])
    again = grpcurl.call("GetSession", {"session_id": sid}).json()["session"]
    assert again["dynamic_info"] == "the player now carries the red key"

    refused = grpcurl.call("DisconnectSession", {"session_id": sid}).error()
    assert refused["code"] == FAILED_PRECONDITION, refused
    assert "CREATED" in refused["message"]
    unchanged = grpcurl.call("GetSession", {"session_id": sid}).json()["session"]
    assert unchanged["state"] == "SESSION_STATE_CREATED"

    ended = grpcurl.call("TerminateSession", {"session_id": sid}).json()["session"]
    assert ended["id"] == sid
    assert ended["state"] == "SESSION_STATE_TERMINATED"
    assert ended["end_reason"] == "END_REASON_TERMINATED"
    assert timestamp(ended["end_time"]) >= timestamp(ended["create_time"])

    twice = grpcurl.call("TerminateSession", {"session_id": sid}).error()
    assert twice["code"] == FAILED_PRECONDITION, twice
    final = grpcurl.call("GetSession", {"session_id": sid}).json()["session"]
    assert final["state"] == "SESSION_STATE_TERMINATED"
    assert final["end_time"] == ended["end_time"]

    by_state = grpcurl.call(
        "ListSessions", {"metadata": {"run": run}, "state": "SESSION_STATE_CREATED"}
    ).json()
    assert by_state.get("sessions", []) == []


def test_error_statuses(grpcurl: Grpcurl, second_api_key: str) -> None:
    sid = grpcurl.call("CreateSession", {"session": {"agent_id": "npc"}}).json()["session"]["id"]

    no_key = grpcurl.call("GetSession", {"session_id": sid}, key="").error()
    assert no_key["code"] == UNAUTHENTICATED, no_key
    bad_key = grpcurl.call("GetSession", {"session_id": sid}, key="pk_not-a-key").error()
    assert bad_key["code"] == UNAUTHENTICATED, bad_key

    bad_id = grpcurl.call("GetSession", {"session_id": "nope"}).error()
    assert bad_id["code"] == INVALID_ARGUMENT, bad_id
    bad_request = [
        d for d in bad_id.get("details", []) if d["@type"].endswith("google.rpc.BadRequest")
    ]
    assert bad_request, bad_id
    assert bad_request[0]["field_violations"][0]["field"] == "session_id"

    missing_agent = grpcurl.call("CreateSession", {"session": {"user_id": "u"}}).error()
    assert missing_agent["code"] == INVALID_ARGUMENT, missing_agent
    assert "agent_id" in json.dumps(missing_agent)

    unknown = grpcurl.call("GetSession", {"session_id": "sess_" + "0" * 26}).error()
    assert unknown["code"] == NOT_FOUND, unknown

    # A key made with `parleyd keys create` works, and sees nothing of the dev key's sessions.
    foreign = grpcurl.call("GetSession", {"session_id": sid}, key=second_api_key).error()
    assert foreign["code"] == NOT_FOUND, foreign
    own = grpcurl.call("CreateSession", {"session": {"agent_id": "npc"}}, key=second_api_key).json()
    assert own["session"]["state"] == "SESSION_STATE_CREATED"


def test_describe_session_message(grpcurl: Grpcurl) -> None:
    res = grpcurl.reflect("describe", "parley.v1.Session")
    assert res.returncode == 0, res.stderr
    assert "parley.v1.Session is a message" in res.stdout
    for decl in (
        "string agent_id = 2;",
        "map<string, string> metadata = 11;",
        ".google.protobuf.Duration max_duration = 12;",
        ".parley.v1.SessionState state = 16;",
    ):
        assert decl in res.stdout, res.stdout
    enum = grpcurl.reflect("describe", "parley.v1.SessionState")
    assert "SESSION_STATE_TERMINATED = 4;" in enum.stdout, enum.stdout


@pytest.mark.parametrize("source", ["proto-files", "reflection"])
def test_describe_shows_field_comments(grpcurl: Grpcurl, source: str) -> None:
    if source == "proto-files":
        # The comment is in the contract, and grpcurl prints it when it has source info.
        res = grpcurl.run(
            "-import-path",
            str(PROTO_DIR),
            "-proto",
            "parley/v1/session_service.proto",
            "describe",
            "parley.v1.Session",
        )
    else:
        res = grpcurl.reflect("describe", "parley.v1.Session")
    assert res.returncode == 0, res.stderr
    assert AGENT_ID_COMMENT in res.stdout, res.stdout
