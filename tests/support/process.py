"""A real `parleyd serve` process, for clients that nobody here wrote and for crash tests.

The server runs as a subprocess on 127.0.0.1:0 over a SQLite file. `start_parleyd` reads the
bound port and the development API key from its stdout, waits (with a deadline) until the gRPC
health check answers SERVING; `stop` ends it with SIGTERM (SIGKILL if it will not go).
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.tools import tool

STARTUP_DEADLINE_S = 30.0
STOP_DEADLINE_S = 10.0

_LISTENING = re.compile(r"^parleyd \S+ listening on (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)$")
API_KEY = re.compile(r"\b(pk_[A-Za-z0-9_\-]+)")


@dataclass
class ParleydProcess:
    """A running `parleyd serve` subprocess and what its stdout told us."""

    proc: subprocess.Popen[bytes]
    port: int
    dev_api_key: str
    database_url: str
    stdout_lines: list[str]
    stderr_path: Path
    _drain: threading.Thread | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        """The server's stderr (its structured log) so far: for failure messages."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, deadline_s: float = STOP_DEADLINE_S) -> int:
        """SIGTERM (the server drains), then SIGKILL after the deadline; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=deadline_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=deadline_s)
        if self._drain is not None:
            self._drain.join(timeout=deadline_s)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def _read_startup(proc: subprocess.Popen[bytes], deadline: float) -> tuple[list[str], int, str]:
    """Reads stdout until the "listening" line; returns (lines so far, port, dev key or "")."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[str] = []
    pending = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no 'listening' line on stdout before the deadline")
            if not sel.select(timeout=min(remaining, 1.0)):
                if proc.poll() is not None:
                    raise RuntimeError(f"parleyd exited with code {proc.returncode} at startup")
                continue
            # Raw reads (no buffered reader): select() must see every byte not yet consumed.
            chunk = os.read(fd, 65536)
            if not chunk:
                proc.wait(timeout=5)
                raise RuntimeError(f"parleyd closed stdout (exit code {proc.returncode})")
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for n, raw in enumerate(complete):
                lines.append(raw.decode(errors="replace"))
                m = _LISTENING.match(lines[-1].strip())
                if m:
                    # Everything read after the listening line is kept too: whole lines, then
                    # the start of the next one (the drain thread records the rest).
                    lines.extend(r.decode(errors="replace") for r in complete[n + 1 :])
                    if pending:
                        lines.append(pending.decode(errors="replace"))
                    return lines, int(m.group("port")), _dev_key(lines)


def _dev_key(lines: list[str]) -> str:
    text = "\n".join(lines)
    if "DEVELOPMENT API KEY" not in text:
        return ""
    m = API_KEY.search(text[text.index("DEVELOPMENT API KEY") :])
    return m.group(1) if m else ""


def wait_serving(target: str, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Polls grpc.health.v1 Check("") until SERVING; raises when the deadline passes."""
    last = "no answer yet"
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"parleyd exited with code {proc.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            except grpc.RpcError as exc:
                last = f"{exc.code()}: {exc.details()}"
            else:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            time.sleep(0.05)
    raise TimeoutError(f"health check of {target} not SERVING before the deadline ({last})")


def start_parleyd(workdir: Path, *extra_args: str, wrap: Sequence[str] = ()) -> ParleydProcess:
    """Starts `parleyd serve` on 127.0.0.1:0 with a fresh SQLite file in `workdir`.

    `wrap` is a command prefix that runs it (e.g. ``unshare -m sh -c '...; exec "$@"' sh``): the
    parleyd command line is appended to it."""
    exe = tool("parleyd")
    if exe is None:
        pytest.fail("the parleyd command is not installed (run `make setup`)")
    workdir.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite+aiosqlite:///{workdir / 'parleyd.db'}"
    stderr_path = workdir / "parleyd.stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEYD_")}
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [
        *wrap,
        exe,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--database-url",
        database_url,
        "--http-port",
        "0",
        "--drain-timeout",
        "1s",
        *extra_args,
    ]
    with stderr_path.open("w") as stderr_file:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            cwd=workdir,
            env=env,
        )
    server = ParleydProcess(proc, 0, "", database_url, [], stderr_path)
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    try:
        lines, port, key = _read_startup(proc, deadline)
        server.port, server.dev_api_key, server.stdout_lines = port, key, lines
        # Keep reading stdout so the server can never block on a full pipe.
        assert proc.stdout is not None
        stdout = proc.stdout
        server._drain = threading.Thread(
            target=lambda: lines.extend(
                line.decode(errors="replace").rstrip("\n") for line in stdout
            ),
            name="parleyd-stdout",
            daemon=True,
        )
        server._drain.start()
        wait_serving(server.target, deadline, proc)
    except BaseException as exc:
        server.stop()
        if isinstance(exc, Exception):
            pytest.fail(
                f"parleyd did not start: {exc}\ncommand: {cmd}\nstdout: {server.stdout_lines}\n"
                f"stderr:\n{server.log()[-4000:]}"
            )
        raise
    return server


@contextlib.contextmanager
def running_parleyd(workdir: Path, *extra_args: str) -> Iterator[ParleydProcess]:
    server = start_parleyd(workdir, *extra_args)
    try:
        yield server
    finally:
        server.stop()
