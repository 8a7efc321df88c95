"""Plumbing shared by the benchmarks: server subprocesses, CPU/RSS readings, percentiles.

A benchmark script runs its servers as subprocesses of itself (`script.py --role NAME`): each
child prints one JSON line once it serves, and lives until its stdin closes, so nothing outlives
the run. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START_DEADLINE_S = 30.0


async def wait_stdin_eof() -> None:
    """In a server child: returns when the parent closes our stdin (or dies)."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)


def announce(**info: Any) -> None:
    print(json.dumps(info), flush=True)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.info['port']}"

    def stop(self) -> None:
        """Closes its stdin (it stops by itself); SIGKILL if it has not gone in 10 s."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_child(script: str, name: str, role_args: list[str]) -> Child:
    cmd = [sys.executable, str(Path(script).resolve()), "--role", *role_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    line = _readline_with_deadline(proc, time.monotonic() + START_DEADLINE_S)
    try:
        info = json.loads(line)
    except json.JSONDecodeError:
        proc.kill()
        raise RuntimeError(f"{name} did not start: {line!r}") from None
    return Child(name, proc, info)


def _readline_with_deadline(proc: subprocess.Popen[bytes], deadline: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                raise TimeoutError("child did not announce itself before the deadline")
            if not sel.select(timeout=min(remaining, 1.0)):
                if proc.poll() is not None:
                    raise RuntimeError(f"child exited with code {proc.returncode}")
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                proc.wait(timeout=5)
                raise RuntimeError(f"child exited with code {proc.returncode}")
            buf += chunk
    return buf.split(b"\n", 1)[0].decode()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all threads) from /proc; None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[idx]


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
    }


async def serve_parleyd(database_url: str, **settings: Any) -> None:
    """In a server child: a full parleyd on 127.0.0.1:0 with an API key of its own.

    Announces {port, api_key, http_port}; `settings` override the production defaults.
    """
    from parleyd import logs
    from parleyd.app import App
    from parleyd.config import Settings

    logs.configure("WARNING")
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "http_port": 0,
        "database_url": database_url,
        "log_level": "WARNING",
    }
    server = App(Settings(**(base | settings)))
    await server.start()
    assert server.manager is not None
    _, key = await server.manager.create_api_key(name="bench", max_session_duration_ms=3_600_000)
    announce(port=server.port, api_key=key, http_port=server.http_port)
    await wait_stdin_eof()
    await server.stop(0.5)


async def serve_bare(service: str, handlers: dict[str, Any]) -> None:
    """In a server child: a bare grpc.aio server with generic `handlers` (the baseline)."""
    import grpc

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    announce(port=port)
    await wait_stdin_eof()
    await server.stop(0.5)
