"""Unary throughput and latency of parleyd against a bare grpc.aio echo server.

    .venv/bin/python bench/unary.py [--rounds 5] [--seconds 2.5] [--concurrency 50] [--json]

Two servers run side by side, each in its own subprocess started the same way (this script with
--role): a bare grpc.aio unary echo (a generic handler: no validation, no storage, no interceptors)
and a full parleyd (parleyd.app.App over a fresh SQLite file, log level WARNING). This process is
the closed-loop load generator: `--concurrency` callers on one channel per server, each sending
its next call when the previous one returns, for `--seconds` per phase (at most `--max-calls`).

Each round runs four phases, interleaved so that drift hits both sides alike:
    bare echo (CreateSessionRequest-sized) -> CreateSession -> bare echo (GetSession-sized) ->
    GetSession (on ids made before the rounds)
and the result is the MEDIAN of the per-round ratios parleyd/bare, next to the targets
(Create >= 0.4x bare, Get >= 0.6x bare). Figures only: nothing here asserts on timing.
Everything stays on 127.0.0.1, and every loop is bounded in calls and in time.

--breakdown (or --breakdown-only) adds CPU per call of each server layer, measured in-process;
--profile-out FILE runs the parleyd server under cProfile and prints where its time went.
Findings and figures: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    Child,
    cpu_seconds,
    percentile,
    serve_bare,
    serve_parleyd,
    start_child,
)

ECHO_METHOD = "/bench.v1.EchoService/Echo"
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]
TARGETS = {"create": 0.4, "get": 0.6}
SERVER_START_DEADLINE_S = 30.0
CALL_TIMEOUT_S = 10.0
GET_POOL = 500


# ---------------------------------------------------------------------------------------------
# Server side (run as subprocesses: `unary.py --role echo|parleyd`)


async def _serve_echo() -> None:
    # A coroutine: grpc.aio would run a plain function in a thread pool.
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    # Identity (de)serializers: the handler sees and returns raw bytes.
    await serve_bare("bench.v1.EchoService", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})


async def _serve_parleyd(database_url: str) -> None:
    await serve_parleyd(database_url)


def _run_role(args: argparse.Namespace) -> None:
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    if args.role == "echo":
        asyncio.run(_serve_echo())
        return
    if not args.profile_out:
        asyncio.run(_serve_parleyd(args.database_url))
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(_serve_parleyd(args.database_url))
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile_out)


# ---------------------------------------------------------------------------------------------
# Client side: the closed-loop load generator


@dataclass
class Phase:
    name: str
    calls: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None

    @property
    def server_cpu_pct(self) -> float | None:
        """Share of one core the server used during the phase."""
        return None if self.server_cpu_s is None else 100 * self.server_cpu_s / self.seconds

    @property
    def server_cpu_ms_per_call(self) -> float | None:
        if self.server_cpu_s is None or not self.calls:
            return None
        return 1000 * self.server_cpu_s / self.calls

    @property
    def qps(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


async def closed_loop(
    name: str,
    call: Callable[[int], Awaitable[object]],
    *,
    concurrency: int,
    seconds: float,
    max_calls: int,
    server_pid: int,
) -> Phase:
    """`concurrency` workers, each calling again as soon as its call returns, until time/count."""
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    server_cpu0 = cpu_seconds(server_pid)
    client_cpu0 = time.process_time()
    start = time.perf_counter()
    stop_at = start + seconds

    async def worker(wid: int) -> None:
        nonlocal issued
        while issued < max_calls and time.perf_counter() < stop_at:
            issued += 1
            t0 = time.perf_counter()
            try:
                await call(issued)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
                continue
            latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    server_cpu1 = cpu_seconds(server_pid)
    client_cpu = time.process_time() - client_cpu0
    if errors:
        print(f"  ! {name}: {len(errors)} errors, first: {errors[0]}", file=sys.stderr)
    server_cpu = None if server_cpu0 is None or server_cpu1 is None else server_cpu1 - server_cpu0
    return Phase(name, len(latencies), len(errors), elapsed, latencies, server_cpu, client_cpu)


@dataclass
class Round:
    index: int
    bare_create: Phase
    create: Phase
    bare_get: Phase
    get: Phase

    @property
    def create_ratio(self) -> float:
        return self.create.qps / self.bare_create.qps

    @property
    def get_ratio(self) -> float:
        return self.get.qps / self.bare_get.qps


async def run_bench(args: argparse.Namespace, echo: Child, parleyd: Child) -> list[Round]:
    from parley.v1 import session_pb2, session_service_pb2, session_service_pb2_grpc

    echo_channel = grpc.aio.insecure_channel(echo.target, options=CHANNEL_OPTIONS)
    p_channel = grpc.aio.insecure_channel(parleyd.target, options=CHANNEL_OPTIONS)
    try:
        await asyncio.wait_for(echo_channel.channel_ready(), SERVER_START_DEADLINE_S)
        await asyncio.wait_for(p_channel.channel_ready(), SERVER_START_DEADLINE_S)
        md = (("x-api-key", parleyd.info["api_key"]),)
        stub = session_service_pb2_grpc.SessionServiceStub(p_channel)
        echo_call = echo_channel.unary_unary(ECHO_METHOD)

        def create_request(i: int) -> Any:
            return session_service_pb2.CreateSessionRequest(
                session=session_pb2.Session(
                    agent_id="bench-npc",
                    user_id=f"player-{i % 1000}",
                    situation="A small tavern at dusk.",
                    metadata={"bench": "unary"},
                )
            )

        async def create(i: int) -> object:
            return await stub.CreateSession(create_request(i), metadata=md, timeout=CALL_TIMEOUT_S)

        ids: list[str] = []
        for _ in range(GET_POOL):
            resp = await stub.CreateSession(create_request(0), metadata=md, timeout=CALL_TIMEOUT_S)
            ids.append(resp.session.id)
        rng = random.Random(7)

        async def get(i: int) -> object:
            req = session_service_pb2.GetSessionRequest(session_id=rng.choice(ids))
            return await stub.GetSession(req, metadata=md, timeout=CALL_TIMEOUT_S)

        # Same-sized requests for the echo, and the same metadata, so only the server differs.
        create_payload = os.urandom(create_request(999).ByteSize())
        get_payload = os.urandom(
            session_service_pb2.GetSessionRequest(session_id=ids[0]).ByteSize()
        )

        async def bare_create(i: int) -> object:
            return await echo_call(create_payload, metadata=md, timeout=CALL_TIMEOUT_S)

        async def bare_get(i: int) -> object:
            return await echo_call(get_payload, metadata=md, timeout=CALL_TIMEOUT_S)

        def phase(
            name: str, fn: Callable[[int], Awaitable[object]], server: Child, secs: float
        ) -> Any:
            if args.verbose:
                print(f"  phase {name} ({secs}s)", file=sys.stderr, flush=True)
            return closed_loop(
                name,
                fn,
                concurrency=args.concurrency,
                seconds=secs,
                max_calls=args.max_calls,
                server_pid=server.proc.pid,
            )

        for name, fn, srv in (
            ("bare", bare_create, echo),
            ("create", create, parleyd),
            ("get", get, parleyd),
        ):
            await phase(f"warmup-{name}", fn, srv, args.warmup)

        rounds: list[Round] = []
        for r in range(1, args.rounds + 1):
            rnd = Round(
                r,
                await phase("bare@create", bare_create, echo, args.seconds),
                await phase("create", create, parleyd, args.seconds),
                await phase("bare@get", bare_get, echo, args.seconds),
                await phase("get", get, parleyd, args.seconds),
            )
            rounds.append(rnd)
            if not args.json:
                print(
                    f"  round {r}: bare {rnd.bare_create.qps:7.0f}  create {rnd.create.qps:7.0f}"
                    f" ({rnd.create_ratio:.2f}x)   bare {rnd.bare_get.qps:7.0f}"
                    f"  get {rnd.get.qps:7.0f} ({rnd.get_ratio:.2f}x)",
                    flush=True,
                )
        return rounds
    finally:
        await echo_channel.close()
        await p_channel.close()


# ---------------------------------------------------------------------------------------------
# --breakdown: where a call's CPU goes, layer by layer, in this process (no gRPC, one at a time)


async def breakdown(calls: int) -> dict[str, Any]:
    """CPU per call of each layer under GetSession/CreateSession, in-process, no gRPC.

    Layers: plain sqlite3 (the floor) -> Repository.get_session served by the session cache ->
    the same without the cache (one read on a reader thread) -> the SessionManager plus protobuf
    conversion (all the servicer does besides gRPC). Creates run one at a time and 50 at once
    (group commit). Also counts thread hand-offs per call: job lists handed to the SQLite
    threads (each is one wake-up there and one call_soon_threadsafe back). CPU is process-wide
    (all threads); each figure is the best of 3 runs of `calls` calls.
    """
    import sqlite3

    from parley.v1 import session_service_pb2

    from parleyd.domain.session import SessionSpec
    from parleyd.grpc import convert
    from parleyd.manager import SessionManager, wall_clock_ms
    from parleyd.store import Repository, open_database
    from parleyd.store.database import _SqliteRunner

    repeats = 3
    hops = 0
    real_flush: Any = _SqliteRunner._flush

    def counting(self: Any, key: Any) -> None:
        nonlocal hops
        if self._pending.get(key) and not (key[0] and key[1] in self._writing):
            hops += 1
        real_flush(self, key)

    async def measure(fn: Callable[[int], Awaitable[object]], batch: int = 1) -> dict[str, float]:
        """The best of repeats runs of `calls` calls: the least disturbed by other processes."""
        nonlocal hops

        async def run(n: int) -> None:
            for i in range(0, n, batch):
                if batch == 1:
                    await fn(i)
                else:
                    await asyncio.gather(*(fn(i + j) for j in range(batch)))

        await run(min(50, calls))
        best: tuple[float, float] | None = None
        hops = 0
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            await run(calls)
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            best = (cpu, wall) if best is None or cpu < best[0] else best
        assert best is not None
        return {
            "cpu_us_per_call": round(1e6 * best[0] / calls, 1),
            "wall_us_per_call": round(1e6 * best[1] / calls, 1),
            "thread_hops_per_call": round(hops / (calls * repeats), 2),
        }

    out: dict[str, Any] = {"calls": calls}
    with tempfile.TemporaryDirectory(prefix="parleyd-breakdown-") as tmp:
        path = Path(tmp) / "b.db"
        db = await open_database(f"sqlite+aiosqlite:///{path}")
        repo = Repository(db)
        uncached = Repository(db, session_cache=False)
        manager = SessionManager(repo)
        key, plaintext = await repo.create_api_key(
            name="b", max_session_duration_ms=3_600_000, now_ms=wall_clock_ms()
        )
        spec = SessionSpec(
            agent_id="bench-npc",
            user_id="player-1",
            situation="A small tavern at dusk.",
            metadata={"bench": "unary"},
        )
        _SqliteRunner._flush = counting  # type: ignore[method-assign]
        try:
            ids: list[str] = []

            async def manager_create(i: int) -> object:
                created = await manager.create_session(
                    key, spec, request_id="", api_key_plaintext=plaintext
                )
                ids.append(created.session.id)
                return session_service_pb2.CreateSessionResponse(
                    session=convert.session_to_pb(created.session, manager.now_ms()),
                    access_token=created.access_token,
                ).SerializeToString()

            out["create.manager+convert"] = await measure(manager_create)
            out["create.manager+convert x50"] = await measure(manager_create, batch=50)

            async def repo_get(i: int) -> object:
                return await repo.get_session(ids[i % len(ids)], key.id)

            async def uncached_get(i: int) -> object:
                return await uncached.get_session(ids[i % len(ids)], key.id)

            async def manager_get(i: int) -> object:
                session = await manager.get_session(key, ids[i % len(ids)])
                return session_service_pb2.GetSessionResponse(
                    session=convert.session_to_pb(session, manager.now_ms())
                ).SerializeToString()

            sql = "SELECT * FROM sessions WHERE id = ? AND api_key_id = ?"
            plain = sqlite3.connect(path)
            try:

                async def sqlite3_get(i: int) -> object:
                    return plain.execute(sql, (ids[i % len(ids)], key.id)).fetchall()

                out["get.sqlite3"] = await measure(sqlite3_get)
            finally:
                plain.close()
            out["get.repository (cache)"] = await measure(repo_get)
            out["get.repository (no cache)"] = await measure(uncached_get)
            out["get.manager+convert"] = await measure(manager_get)
        finally:
            _SqliteRunner._flush = real_flush  # type: ignore[method-assign]
            await db.close()
    return out


def print_breakdown(b: dict[str, Any]) -> None:
    print(f"\nCPU per call by layer (in-process, best of 3 x {b['calls']} calls):")
    print(f"{'layer':<30}{'CPU us/call':>12}{'wall us/call':>14}{'thread hops':>13}")
    for name, m in b.items():
        if isinstance(m, dict):
            print(
                f"{name:<30}{m['cpu_us_per_call']:>12.0f}{m['wall_us_per_call']:>14.0f}"
                f"{m['thread_hops_per_call']:>13.2f}"
            )


# ---------------------------------------------------------------------------------------------
# Report


def summarize(rounds: list[Round]) -> dict[str, Any]:
    def pooled(attr: str) -> dict[str, Any]:
        phases: list[Phase] = [getattr(r, attr) for r in rounds]
        lat = [x for p in phases for x in p.latencies_ms]
        calls = sum(p.calls for p in phases)
        seconds = sum(p.seconds for p in phases)
        known = [p.server_cpu_s for p in phases if p.server_cpu_s is not None]
        all_known = len(known) == len(phases)
        return {
            "qps_median": statistics.median(p.qps for p in phases),
            "qps_per_round": [round(p.qps, 1) for p in phases],
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
            "calls": calls,
            "errors": sum(p.errors for p in phases),
            # CPU of the server process (all threads): % of one core, and per call.
            "server_cpu_pct": 100 * sum(known) / seconds if all_known else None,
            "server_cpu_ms_per_call": 1000 * sum(known) / calls if all_known and calls else None,
            "client_cpu_pct": 100 * sum(p.client_cpu_s or 0.0 for p in phases) / seconds,
        }

    create_ratios = [r.create_ratio for r in rounds]
    get_ratios = [r.get_ratio for r in rounds]
    return {
        "workloads": {
            "bare_echo@create_size": pooled("bare_create"),
            "CreateSession": pooled("create"),
            "bare_echo@get_size": pooled("bare_get"),
            "GetSession": pooled("get"),
        },
        "ratios": {
            "create": {
                "median": statistics.median(create_ratios),
                "per_round": [round(x, 4) for x in create_ratios],
                "target": TARGETS["create"],
                "met": statistics.median(create_ratios) >= TARGETS["create"],
            },
            "get": {
                "median": statistics.median(get_ratios),
                "per_round": [round(x, 4) for x in get_ratios],
                "target": TARGETS["get"],
                "met": statistics.median(get_ratios) >= TARGETS["get"],
            },
        },
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def print_table(doc: dict[str, Any]) -> None:
    cfg, summary = doc["config"], doc["summary"]
    print()
    print(
        f"parleyd unary bench - {doc['date']} - {cfg['rounds']} rounds x {cfg['seconds']}s"
        f" per phase, concurrency {cfg['concurrency']}, {doc['machine']['cpus']} cores"
    )
    m = doc["machine"]
    if m["loadavg_1m_at_start"] > 1.0:
        print(
            f"note: 1-minute load average was {m['loadavg_1m_at_start']} at the start on"
            f" {m['cpus']} cores: other processes shared the CPU, absolute figures are low"
        )
    header = (
        f"{'workload':<24}{'QPS (median)':>13}{'p50 ms':>9}{'p99 ms':>9}{'calls':>8}{'err':>5}"
        f"{'srv CPU%':>10}{'srv ms/call':>13}{'cli CPU%':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, w in summary["workloads"].items():
        print(
            f"{name:<24}{w['qps_median']:>13.0f}{w['p50_ms']:>9.2f}{w['p99_ms']:>9.2f}"
            f"{w['calls']:>8}{w['errors']:>5}{_num(w['server_cpu_pct'], 0):>10}"
            f"{_num(w['server_cpu_ms_per_call'], 3):>13}{_num(w['client_cpu_pct'], 0):>10}"
        )
    print()
    print(f"{'ratio parleyd/bare':<24}{'median':>10}{'target':>10}  {'':<8}per round")
    for name, label in (("create", "CreateSession"), ("get", "GetSession")):
        r = summary["ratios"][name]
        verdict = "met" if r["met"] else "MISSED"
        rounds = " ".join(f"{x:.2f}" for x in r["per_round"])
        target = f">= {r['target']}x"
        print(f"{label:<24}{r['median']:>9.2f}x{target:>10}  {verdict:<8}{rounds}")


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_profile(path: str, limit: int = 30) -> None:
    print(f"\nparleyd server profile ({path}), top {limit} by own time:")
    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(limit)
    print(f"top {limit} by cumulative time:")
    stats.sort_stats("cumulative").print_stats(limit)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds [5]")
    parser.add_argument("--seconds", type=float, default=2.5, help="seconds per phase [2.5]")
    parser.add_argument("--concurrency", type=int, default=50, help="callers in flight [50]")
    parser.add_argument(
        "--max-calls", type=int, default=200_000, help="cap on calls per phase [200000]"
    )
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per kind [0.5]")
    parser.add_argument("--json", action="store_true", help="print one JSON document only")
    parser.add_argument("--verbose", action="store_true", help="say when each phase starts")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also measure CPU per call of each server layer in-process (adds a few seconds)",
    )
    parser.add_argument(
        "--profile-out", default="", help="run the parleyd server under cProfile, stats to FILE"
    )
    parser.add_argument(
        "--breakdown-only", action="store_true", help="only the --breakdown, no load runs"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=0.0,
        help="diagnostic: sys.setswitchinterval() in both servers (default: Python's 0.005)",
    )
    parser.add_argument("--role", choices=["echo", "parleyd"], help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        _run_role(args)
        return
    if args.breakdown_only:
        result = asyncio.run(breakdown(1000))
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print_breakdown(result)
        return
    if args.rounds < 1 or args.seconds <= 0 or args.concurrency < 1 or args.max_calls < 1:
        parser.error("--rounds, --seconds, --concurrency and --max-calls must be positive")

    load_at_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="parleyd-bench-") as tmp:
        db_url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        common = ["--switch-interval", str(args.switch_interval)] if args.switch_interval else []
        role = ["parleyd", "--database-url", db_url, *common]
        if args.profile_out:
            role += ["--profile-out", str(Path(args.profile_out).resolve())]
        servers: list[Child] = []
        try:
            servers.append(start_child(__file__, "echo", ["echo", *common]))
            servers.append(start_child(__file__, "parleyd", role))
            if not args.json:
                echo, parleyd = servers
                print(
                    f"bare echo on {echo.target} (pid {echo.proc.pid}), parleyd on"
                    f" {parleyd.target} (pid {parleyd.proc.pid}), client pid {os.getpid()}",
                    flush=True,
                )
            started = time.monotonic()
            rounds = asyncio.run(run_bench(args, servers[0], servers[1]))
            took = time.monotonic() - started
        finally:
            for s in reversed(servers):
                s.stop()

    doc: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["bench/unary.py", *(argv if argv is not None else sys.argv[1:])]),
        "config": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "concurrency": args.concurrency,
            "max_calls": args.max_calls,
            "warmup": args.warmup,
            "get_pool": GET_POOL,
        },
        "machine": {**machine(), "loadavg_1m_at_start": load_at_start},
        "load_seconds": round(took, 1),
        "summary": summarize(rounds),
        "rounds": [
            {
                "round": r.index,
                **{
                    p.name: {
                        "qps": round(p.qps, 1),
                        "p50_ms": round(p.pct(50), 3),
                        "p99_ms": round(p.pct(99), 3),
                        "calls": p.calls,
                        "errors": p.errors,
                        "server_cpu_pct": _round(p.server_cpu_pct),
                        "server_cpu_ms_per_call": _round(p.server_cpu_ms_per_call, 4),
                    }
                    for p in (r.bare_create, r.create, r.bare_get, r.get)
                },
            }
            for r in rounds
        ],
    }
    if args.breakdown:
        doc["breakdown"] = asyncio.run(breakdown(1000))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)
        if args.breakdown:
            print_breakdown(doc["breakdown"])
    if args.profile_out and not args.json:
        print_profile(args.profile_out)


if __name__ == "__main__":
    main()
