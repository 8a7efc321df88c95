"""Interact: relay latency, capacity and join latency of parleyd against a bare grpc.aio bidi echo.

    .venv/bin/python bench/interact.py [--rounds 5] [--frames 1000] [--json] [--quick]

Servers run as subprocesses of this script, started the same way: a bare grpc.aio bidi echo
(a generic stream handler that writes back every message it reads: no checks, no routing) and a
full parleyd (parleyd.app.App over a fresh SQLite file, log level WARNING). This process is the
client side. Everything stays on 127.0.0.1; every loop is bounded in count and time.

1. Lock-step round trip of a 20 ms 48 kHz frame (1,920 bytes): USER -> parleyd -> AGENT ->
   parleyd -> USER (the agent answers each frame with reply audio), against client -> echo ->
   client. Rounds alternate the two; the result is the median of per-round p50 ratios.
   A bare in-memory relay with no checks reaches about 2.0x here; target <= 2.2x at p50.
2. Capacity: S concurrent sessions, each USER sending one 1,920-byte frame every 20 ms (50/s) to
   its AGENT for a few seconds; S grows until p99 one-way latency exceeds 20 ms or a frame is
   lost. The bare echo is measured the same way (S streams, each frame echoed back to the
   sender), so both sides cost this process one send and one receive per frame.
   Target: parleyd capacity >= 0.8x the bare echo's.
3. join -> opened latency of a USER on a fresh session with its AGENT attached (the session goes
   CREATED -> ACTIVE in the database on the way). Target p50 <= 10 ms.
Figures only: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    Child,
    cpu_seconds,
    machine,
    percentile,
    rss_mib,
    serve_bare,
    serve_parleyd,
    start_child,
)

ECHO_METHOD = "/bench.v1.EchoService/Stream"
FRAME_BYTES = 1_920  # 20 ms of 16-bit mono PCM at 48 kHz
OPTIONS = [("grpc.enable_http_proxy", 0)]
CAPACITY_STEPS = (10, 20, 30, 40, 60, 80, 100, 130, 160, 200)
P99_BUDGET_MS = 20.0


# -- server side -------------------------------------------------------------------------------


async def _serve_echo() -> None:
    async def echo(request_iterator: Any, context: Any) -> None:
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            await context.write(message)

    await serve_bare(
        "bench.v1.EchoService", {"Stream": grpc.stream_stream_rpc_method_handler(echo)}
    )


async def _serve_parleyd(database_url: str) -> None:
    # The lock-step loop sends a frame as soon as the last one came back (thousands per second):
    # lift the per-stream frame budget, which is there for clients, not for measuring the relay.
    await serve_parleyd(database_url, interact_max_frames_per_second=1_000_000)


# -- client side: parleyd ----------------------------------------------------------------------


class Parleyd:
    def __init__(self, child: Child) -> None:
        from parley.v1 import (
            interact_pb2,
            session_pb2,
            session_service_pb2,
            session_service_pb2_grpc,
        )

        self.ip = interact_pb2
        self.sp = session_pb2
        self.ssp = session_service_pb2
        self.channel = grpc.aio.insecure_channel(child.target, options=OPTIONS)
        self.stub = session_service_pb2_grpc.SessionServiceStub(self.channel)
        self.md = (("x-api-key", child.info["api_key"]),)

    async def session(self) -> tuple[str, str]:
        resp = await self.stub.CreateSession(
            self.ssp.CreateSessionRequest(
                session=self.sp.Session(agent_id="bench", agent_mode=self.sp.AGENT_MODE_EXTERNAL)
            ),
            metadata=self.md,
            timeout=10,
        )
        return resp.session.id, resp.access_token

    async def join(self, sid: str, tok: str, role: int) -> Any:
        call = self.stub.Interact()
        await call.write(
            self.ip.InteractRequest(
                join=self.ip.Join(
                    session_id=sid,
                    access_token=tok,
                    role=role,
                    audio_format=self.ip.AudioFormat(sample_rate=48_000, chunk_ms=20),
                )
            )
        )
        await self.until(call, "opened")
        return call

    async def until(self, call: Any, payload: str, timeout: float = 10.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                m = await call.read()
                if m is grpc.aio.EOF:
                    raise RuntimeError("stream ended")
                if m.WhichOneof("payload") == payload:
                    return m

    async def pair(self) -> tuple[Any, Any]:
        sid, tok = await self.session()
        agent = await self.join(sid, tok, self.ip.ROLE_AGENT)
        user = await self.join(sid, tok, self.ip.ROLE_USER)
        return user, agent


# -- 1. lock-step round trip -------------------------------------------------------------------


async def lockstep_bare(target: str, frames: int) -> list[float]:
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as ch:
        call = ch.stream_stream(ECHO_METHOD)()
        frame = b"\x01" * FRAME_BYTES
        out = []
        for i in range(frames + 50):
            t0 = time.perf_counter()
            await call.write(frame)
            await call.read()
            if i >= 50:  # warm-up
                out.append((time.perf_counter() - t0) * 1000)
        await call.done_writing()
        return out


async def lockstep_parleyd(p: Parleyd, frames: int) -> list[float]:
    ip = p.ip
    user, agent = await p.pair()
    await agent.write(ip.InteractRequest(reply_start=ip.ReplyStart(interaction_id="int_bench")))

    async def agent_echo() -> None:
        while True:
            m = await agent.read()
            if m is grpc.aio.EOF:
                return
            if m.WhichOneof("payload") == "audio":
                await agent.write(ip.InteractRequest(reply_audio=ip.ReplyAudio(pcm=m.audio.pcm)))

    echo_task = asyncio.create_task(agent_echo())
    frame = ip.InteractRequest(audio=ip.AudioInput(pcm=b"\x01" * FRAME_BYTES))
    out = []
    try:
        for i in range(frames + 50):
            t0 = time.perf_counter()
            await user.write(frame)
            # Plain reads, like the bare client's: no per-read timeout wrapper on the hot path.
            while (await user.read()).WhichOneof("payload") != "audio":
                pass
            if i >= 50:
                out.append((time.perf_counter() - t0) * 1000)
    finally:
        user.cancel()
        agent.cancel()
        echo_task.cancel()
    return out


# -- 2. capacity --------------------------------------------------------------------------------


@dataclass
class Step:
    sessions: int
    sent: int
    received: int
    p50_ms: float
    p99_ms: float
    server_cpu_pct: float | None

    @property
    def ok(self) -> bool:
        return self.received == self.sent and self.p99_ms <= P99_BUDGET_MS


def stamp(n: int) -> bytes:
    return struct.pack("<qq", time.perf_counter_ns(), n) + b"\x00" * (FRAME_BYTES - 16)


def latency_ms(pcm: bytes) -> float:
    (sent_ns,) = struct.unpack_from("<q", pcm)
    return (time.perf_counter_ns() - sent_ns) / 1e6


async def paced_sender(send: Any, seconds: float, phase: float, counter: list[int]) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time() + phase
    frames = int(seconds * 50)
    for k in range(frames):
        delay = start + k * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(stamp(k))
        counter[0] += 1


class Bucket:
    """Where long-lived reader tasks count what arrives during the current step."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.received = 0


class Readers:
    """One reader task per stream for the whole capacity run (cancelling a read ends an RPC)."""

    def __init__(self) -> None:
        self.bucket = Bucket()
        self.tasks: list[asyncio.Task[None]] = []

    def add(self, read: Any) -> None:
        async def loop() -> None:
            while True:
                pcm = await read()
                if pcm is False:
                    return
                if pcm is None:
                    continue
                b = self.bucket
                b.latencies.append(latency_ms(pcm))
                b.received += 1

        self.tasks.append(asyncio.create_task(loop()))


async def run_step(senders: list[Any], readers: Readers, seconds: float, server_pid: int) -> Step:
    counter = [0]
    bucket = readers.bucket = Bucket()
    cpu0 = cpu_seconds(server_pid)
    t0 = time.perf_counter()
    n = len(senders)
    await asyncio.gather(
        *(paced_sender(s, seconds, 0.02 * i / n, counter) for i, s in enumerate(senders))
    )
    elapsed = time.perf_counter() - t0
    cpu1 = cpu_seconds(server_pid)
    deadline = time.perf_counter() + 1.0
    while bucket.received < counter[0] and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    readers.bucket = Bucket()  # frames arriving later count for nobody
    cpu = None if cpu0 is None or cpu1 is None else 100 * (cpu1 - cpu0) / elapsed
    lat = bucket.latencies
    return Step(n, counter[0], bucket.received, percentile(lat, 50), percentile(lat, 99), cpu)


async def capacity_bare(target: str, seconds: float, steps: tuple[int, ...]) -> list[Step]:
    out: list[Step] = []
    readers = Readers()
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as ch:
        calls: list[Any] = []
        for s in steps:
            while len(calls) < s:
                call = ch.stream_stream(ECHO_METHOD)()
                calls.append(call)
                readers.add(_bare_reader(call))
            step = await run_step([c.write for c in calls], readers, seconds, _PIDS["echo"])
            out.append(step)
            if not step.ok:
                break
        for c in calls:
            c.cancel()
        await asyncio.gather(*readers.tasks, return_exceptions=True)
    return out


def _bare_reader(call: Any) -> Any:
    async def read() -> bytes | bool:
        m = await call.read()
        return False if m is grpc.aio.EOF else m

    return read


async def capacity_parleyd(p: Parleyd, seconds: float, steps: tuple[int, ...]) -> list[Step]:
    ip = p.ip
    out: list[Step] = []
    pairs: list[tuple[Any, Any]] = []
    readers = Readers()

    def sender(user: Any) -> Any:
        async def send(pcm: bytes) -> None:
            await user.write(ip.InteractRequest(audio=ip.AudioInput(pcm=pcm)))

        return send

    def reader(agent: Any) -> Any:
        async def read() -> bytes | bool | None:
            m = await agent.read()
            if m is grpc.aio.EOF:
                return False
            if m.WhichOneof("payload") != "audio":
                return None
            return bytes(m.audio.pcm)

        return read

    for s in steps:
        while len(pairs) < s:
            user, agent = await p.pair()
            pairs.append((user, agent))
            readers.add(reader(agent))
        step = await run_step([sender(u) for u, _ in pairs], readers, seconds, _PIDS["parleyd"])
        out.append(step)
        if not step.ok:
            break
    for u, a in pairs:
        u.cancel()
        a.cancel()
    await asyncio.gather(*readers.tasks, return_exceptions=True)
    return out


def capacity_of(steps: list[Step]) -> int:
    passing = [s.sessions for s in steps if s.ok]
    return max(passing) if passing else 0


# -- 3. join -> opened ----------------------------------------------------------------------------


async def join_latency(p: Parleyd, count: int) -> list[float]:
    ip = p.ip
    prepared = []
    for _ in range(count):
        sid, tok = await p.session()
        agent = await p.join(sid, tok, ip.ROLE_AGENT)
        prepared.append((sid, tok, agent))
    out = []
    for sid, tok, agent in prepared:
        t0 = time.perf_counter()
        user = await p.join(sid, tok, ip.ROLE_USER)
        out.append((time.perf_counter() - t0) * 1000)
        user.cancel()
        agent.cancel()
    return out


# -- driver --------------------------------------------------------------------------------------

_PIDS: dict[str, int] = {}


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "n": len(values),
    }


async def run(args: argparse.Namespace, echo: Child, parleyd: Child) -> dict[str, Any]:
    _PIDS["echo"], _PIDS["parleyd"] = echo.pid, parleyd.pid
    p = Parleyd(parleyd)
    await asyncio.wait_for(p.channel.channel_ready(), 30)
    rounds = []
    for r in range(args.rounds):
        bare = await lockstep_bare(echo.target, args.frames)
        ours = await lockstep_parleyd(p, args.frames)
        rounds.append(
            {
                "bare": summary(bare),
                "parleyd": summary(ours),
                "ratio_p50": percentile(ours, 50) / percentile(bare, 50),
                "ratio_p99": percentile(ours, 99) / percentile(bare, 99),
            }
        )
        print(
            f"  lock-step round {r + 1}: bare p50 {rounds[-1]['bare']['p50_ms']:.3f} ms, "
            f"parleyd p50 {rounds[-1]['parleyd']['p50_ms']:.3f} ms "
            f"({rounds[-1]['ratio_p50']:.2f}x)",
            file=sys.stderr,
        )
    if args.lockstep_only:
        await p.channel.close()
        ratios = [r["ratio_p50"] for r in rounds]
        print(f"median ratio p50 {statistics.median(ratios):.2f}x", file=sys.stderr)
        sys.exit(0)
    rss_before = rss_mib(parleyd.pid)
    steps = CAPACITY_STEPS[:4] if args.quick else CAPACITY_STEPS
    cap_bare = await capacity_bare(echo.target, args.step_seconds, steps)
    print(f"  capacity bare: {[(s.sessions, s.ok) for s in cap_bare]}", file=sys.stderr)
    cap_ours = await capacity_parleyd(p, args.step_seconds, steps)
    print(f"  capacity parleyd: {[(s.sessions, s.ok) for s in cap_ours]}", file=sys.stderr)
    rss_after = rss_mib(parleyd.pid)
    joins = await join_latency(p, args.joins)
    await p.channel.close()
    cb, cp = capacity_of(cap_bare), capacity_of(cap_ours)
    return {
        "benchmark": "interact",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "lockstep": {
            "rounds": rounds,
            "median_ratio_p50": round(statistics.median(r["ratio_p50"] for r in rounds), 3),
            "median_ratio_p99": round(statistics.median(r["ratio_p99"] for r in rounds), 3),
            "target_ratio_p50": 2.2,
        },
        "capacity": {
            "bare_sessions": cb,
            "parleyd_sessions": cp,
            "ratio": round(cp / cb, 3) if cb else None,
            "target_ratio": 0.8,
            "bare_steps": [s.__dict__ | {"ok": s.ok} for s in cap_bare],
            "parleyd_steps": [s.__dict__ | {"ok": s.ok} for s in cap_ours],
            "parleyd_rss_mib_before": rss_before,
            "parleyd_rss_mib_after": rss_after,
            "note": "capacity is capped by the largest step tried" if cap_bare[-1].ok else "",
        },
        "join_to_opened": summary(joins) | {"target_p50_ms": 10.0},
    }


def print_report(doc: dict[str, Any]) -> None:
    ls, cap, j = doc["lockstep"], doc["capacity"], doc["join_to_opened"]
    print(f"parleyd Interact benchmark — {doc['date']} — {doc['machine']['cpus']} cores")
    print("\n1. lock-step round trip, 1,920-byte frame (ms)")
    print("   round   bare p50  bare p99   parleyd p50  parleyd p99   ratio p50")
    for i, r in enumerate(ls["rounds"], 1):
        print(
            f"   {i:>5}   {r['bare']['p50_ms']:8.3f}  {r['bare']['p99_ms']:8.3f}   "
            f"{r['parleyd']['p50_ms']:11.3f}  {r['parleyd']['p99_ms']:11.3f}   "
            f"{r['ratio_p50']:8.2f}x"
        )
    verdict = "met" if ls["median_ratio_p50"] <= ls["target_ratio_p50"] else "MISSED"
    print(f"   median ratio p50 {ls['median_ratio_p50']:.2f}x (target <= 2.2x: {verdict})")
    print("\n2. capacity at 50 frames/s per session, p99 <= 20 ms, no loss")
    for name in ("bare", "parleyd"):
        for s in cap[f"{name}_steps"]:
            print(
                f"   {name:8} {s['sessions']:4} sessions: sent {s['sent']:6} recv {s['received']:6}"
                f"  p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:7.2f} ms  server cpu "
                f"{s['server_cpu_pct'] or 0:5.0f}%  {'ok' if s['ok'] else 'FAIL'}"
            )
    ratio = cap["ratio"]
    verdict = "met" if ratio is not None and ratio >= 0.8 else "MISSED"
    print(
        f"   capacity: bare {cap['bare_sessions']}, parleyd {cap['parleyd_sessions']} "
        f"-> {ratio}x (target >= 0.8x: {verdict}) {cap['note']}"
    )
    print(
        f"   parleyd RSS {cap['parleyd_rss_mib_before']:.0f} MiB before, "
        f"{cap['parleyd_rss_mib_after']:.0f} MiB after the capacity runs"
    )
    verdict = "met" if j["p50_ms"] <= 10 else "MISSED"
    print(
        f"\n3. join -> opened: p50 {j['p50_ms']:.2f} ms, p99 {j['p99_ms']:.2f} ms over {j['n']} "
        f"joins (target p50 <= 10 ms: {verdict})"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--role", choices=["echo", "parleyd"], help=argparse.SUPPRESS)
    ap.add_argument("--database-url", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=1000, help="lock-step frames per round")
    ap.add_argument("--step-seconds", type=float, default=3.0, help="seconds per capacity step")
    ap.add_argument("--joins", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="few capacity steps, for a smoke run")
    ap.add_argument("--lockstep-only", action="store_true", help="only the lock-step rounds")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    if args.role == "echo":
        asyncio.run(_serve_echo())
        return
    if args.role == "parleyd":
        asyncio.run(_serve_parleyd(args.database_url))
        return
    with tempfile.TemporaryDirectory(prefix="parleyd-bench-") as tmp:
        db = f"sqlite+aiosqlite:///{tmp}/bench.db"
        echo = start_child(__file__, "echo", ["echo"])
        parleyd = start_child(__file__, "parleyd", ["parleyd", "--database-url", db])
        try:
            doc = asyncio.run(run(args, echo, parleyd))
        finally:
            echo.stop()
            parleyd.stop()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_report(doc)


if __name__ == "__main__":
    main()
