"""A C++ client generated from proto/ alone (protoc + grpc_cpp_plugin), as the README shows.

proto/ holds everything a client needs, google.rpc error details included (vendored in
proto/google/rpc): the stubs are generated with the README's command, compiled with g++ against
Debian's gRPC, and the program calls a running `parleyd serve` with a bad CreateSession and
decodes the google.rpc.Status it gets back (BadRequest and ErrorInfo).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clients.conftest import REPO_ROOT
from tests.support.process import ParleydProcess
from tests.support.require import require

README = REPO_ROOT / "README.md"
TOOLS = ("protoc", "grpc_cpp_plugin", "g++", "pkg-config")
# Exactly as the README's "Clients in other languages" shows it (checked below).
PROTOC = "protoc -Iproto --cpp_out=gen --grpc_out=gen"
PROTO_GLOBS = ("parley/v1/*.proto", "google/rpc/*.proto")
COMPILE_TIMEOUT_S = 240

PROGRAM = r"""
// Calls CreateSession without an agent_id and prints the google.rpc error details it gets.
#include <iostream>

#include <grpcpp/grpcpp.h>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "parley/v1/session_service.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: bad_request HOST:PORT API_KEY\n";
    return 2;
  }
  auto stub = parley::v1::SessionService::NewStub(
      grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.AddMetadata("x-api-key", argv[2]);
  parley::v1::CreateSessionRequest request;
  request.mutable_session()->set_user_id("player-1");  // but no agent_id: INVALID_ARGUMENT
  parley::v1::CreateSessionResponse response;
  grpc::Status status = stub->CreateSession(&context, request, &response);
  std::cout << "code " << status.error_code() << "\n";
  google::rpc::Status details;  // what the grpc-status-details-bin trailer holds
  if (!details.ParseFromString(status.error_details())) return 1;
  std::cout << "status " << details.code() << " " << details.message() << "\n";
  for (const auto& any : details.details()) {
    google::rpc::BadRequest bad;
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&bad)) {
      for (const auto& v : bad.field_violations()) {
        std::cout << "violation " << v.field() << ": " << v.description() << "\n";
      }
    } else if (any.UnpackTo(&info)) {
      std::cout << "info " << info.reason() << " " << info.domain() << "\n";
    }
  }
  return 0;
}
"""


def _run(args: list[str], cwd: Path, timeout: float) -> str:
    done = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args[0]} failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return done.stdout


def _cpp_toolchain() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        require(f"{', '.join(missing)} not installed (run `make system-deps`)")
    found = subprocess.run(["pkg-config", "--exists", "grpc++", "protobuf"], check=False)
    if found.returncode != 0:
        require("pkg-config finds no grpc++/protobuf (libgrpc++-dev; run `make system-deps`)")


@pytest.fixture(scope="module")
def bad_request(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C++ program, built from stubs generated from proto/ and nothing else."""
    _cpp_toolchain()
    work = tmp_path_factory.mktemp("cpp")
    gen = work / "gen"
    gen.mkdir()
    protos = sorted(
        str(p.relative_to(REPO_ROOT)) for g in PROTO_GLOBS for p in (REPO_ROOT / "proto").glob(g)
    )
    plugin = f"--plugin=protoc-gen-grpc={shutil.which('grpc_cpp_plugin')}"
    _run([*PROTOC.replace("=gen", f"={gen}").split(), plugin, *protos], REPO_ROOT, 60)
    for header in ("google/rpc/status.pb.h", "google/rpc/error_details.pb.h"):
        assert (gen / header).is_file(), header
    (work / "bad_request.cc").write_text(PROGRAM)
    flags = _run(["pkg-config", "--cflags", "--libs", "grpc++", "protobuf"], work, 30).split()
    sources = sorted(str(p) for p in gen.rglob("*.cc"))
    exe = work / "bad_request"
    compile_ = ["g++", "-std=c++17", "-O0", "-Igen", "bad_request.cc", *sources, *flags]
    _run([*compile_, "-o", str(exe)], work, COMPILE_TIMEOUT_S)
    return exe


def test_the_readme_shows_this_generation() -> None:
    text = README.read_text()
    assert "## Clients in other languages" in text
    assert PROTOC in text
    assert all(f"proto/{g}" in text for g in PROTO_GLOBS)


def test_a_cpp_client_from_proto_alone_decodes_bad_request_details(
    bad_request: Path, parleyd_proc: ParleydProcess
) -> None:
    out = _run([str(bad_request), parleyd_proc.target, parleyd_proc.dev_api_key], REPO_ROOT, 30)
    lines = out.splitlines()
    assert lines[0] == "code 3"  # INVALID_ARGUMENT
    assert lines[1].startswith("status 3 ")
    violations = [line for line in lines if line.startswith("violation ")]
    assert violations, out
    assert violations[0].startswith("violation session.agent_id: ")
    assert "info INVALID_ARGUMENT parley.dev" in lines
