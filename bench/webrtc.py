"""The WebRTC bridge: server CPU per browser-like peer, and the latency the bridge path adds.

    .venv/bin/python bench/webrtc.py [--seconds 6] [--json]

A parleyd server (engine on, greeting off, SQLite, bridge offering 127.0.0.1 only) runs as a
subprocess; this process plays the browsers with aiortc peers (Opus mic in, Opus/VP8 out, data
channel), each on its own BUILTIN session, every packet on loopback.

CPU: the server process's CPU share (100 % = one core) while N idle peers are connected (their
mics send silence; the bridge sends 20 ms Opus frames, silence included, and for VIDEO sessions
VP8 avatar frames at 15 fps), against the same N gRPC users sending silence; the difference per
peer is the bridge's cost (Opus encode+decode, SRTP, pacing, VP8). It includes the engine's idle
listening, which both sides have.

Latency: one session with a gRPC USER and an aiortc OBSERVER; the USER types a question, and the
time to the first audio of the reply is taken on each path: the gRPC stream (first audio chunk)
and the WebRTC peer (first decoded audio frame louder than silence). Figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _harness import cpu_seconds, machine, serve_parleyd, start_child

SITUATION = "You are Brom, the blacksmith of Oakvale. A sword costs forty gold coins."


async def _serve(database_url: str) -> None:
    await serve_parleyd(database_url, webrtc_host_addresses="127.0.0.1", greeting="off")


async def _session(stub: Any, key: str, video: bool) -> tuple[str, str, str]:
    from parley.v1 import session_pb2, session_service_pb2

    kind = session_pb2.CONNECTION_TYPE_VIDEO if video else session_pb2.CONNECTION_TYPE_AUDIO
    resp = await stub.CreateSession(
        session_service_pb2.CreateSessionRequest(
            session=session_pb2.Session(
                agent_id="brom", situation=SITUATION, connection_type=kind, avatar_id="brom"
            )
        ),
        metadata=(("x-api-key", key),),
    )
    return resp.session.id, resp.access_token, resp.connect.webrtc_signaling_url


async def _grpc_user(stub: Any, sid: str, tok: str) -> Any:
    from parley.v1 import interact_pb2 as ip

    from tests.support.interact import Peer, has

    peer = Peer(stub.Interact(), ip.ROLE_USER)
    await peer.send(
        join=ip.Join(
            session_id=sid,
            access_token=tok,
            role=ip.ROLE_USER,
            audio_format=ip.AudioFormat(sample_rate=16_000, chunk_ms=20),
        )
    )
    await peer.until(has("opened"), timeout=20)
    return peer


async def _silence_sender(peer: Any, stop: asyncio.Event) -> None:
    from parley.v1 import interact_pb2 as ip

    start = time.monotonic()
    n = 0
    while not stop.is_set():
        n += 1
        await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))
        await peer.send(audio=ip.AudioInput(pcm=bytes(640), sequence=n))


async def _drain(peer: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await peer.read(0.5)
        except TimeoutError:
            continue


async def _cpu_share(pid: int, seconds: float) -> float:
    await asyncio.sleep(1.0)  # settle
    c0, t0 = cpu_seconds(pid) or 0.0, time.monotonic()
    await asyncio.sleep(seconds)
    c1, t1 = cpu_seconds(pid) or 0.0, time.monotonic()
    return 100 * (c1 - c0) / (t1 - t0)


async def measure(info: dict[str, Any], pid: int, seconds: float) -> dict[str, Any]:
    from parley.v1 import session_service_pb2_grpc

    from tests.webrtc.client import connect

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{info['port']}")
    stub = session_service_pb2_grpc.SessionServiceStub(channel)
    key = info["api_key"]
    out: dict[str, Any] = {"idle": await _cpu_share(pid, seconds)}
    for label, video, counts in (("webrtc_audio", False, (1, 2, 4)), ("webrtc_av", True, (1, 2))):
        for n in counts:
            clients = []
            for _ in range(n):
                _, tok, url = await _session(stub, key, video)
                clients.append(await connect(url, tok, "user", video=video))
            out[f"{label}_{n}"] = await _cpu_share(pid, seconds)
            for c in clients:
                await c.close()
            await asyncio.sleep(1.0)
    for n in (1, 2, 4):
        stop = asyncio.Event()
        peers, tasks = [], []
        for _ in range(n):
            sid, tok, _ = await _session(stub, key, False)
            p = await _grpc_user(stub, sid, tok)
            peers.append(p)
            tasks += [
                asyncio.create_task(_silence_sender(p, stop)),
                asyncio.create_task(_drain(p, stop)),
            ]
        out[f"grpc_audio_{n}"] = await _cpu_share(pid, seconds)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in peers:
            p.call.cancel()
        await asyncio.sleep(1.0)
    out["latency"] = await _latency(stub, key)
    await channel.close()
    return out


async def _latency(stub: Any, key: str, rounds: int = 5) -> dict[str, Any]:
    from parley.v1 import interact_pb2 as ip

    from tests.webrtc.client import connect

    sid, tok, url = await _session(stub, key, False)
    user = await _grpc_user(stub, sid, tok)
    observer = await connect(url, tok, "observer")
    grpc_ms, rtc_ms = [], []
    questions = ("how much is a sword", "what do you sell", "hello there")
    for k in range(rounds):
        await asyncio.sleep(1.5)  # the previous reply is over
        observer.first_loud_at = None
        sent = time.monotonic()
        await user.send(text=ip.TextInput(text=questions[k % len(questions)]))
        first_grpc = None
        deadline = sent + 20
        while time.monotonic() < deadline:
            msg = await user.read(20)
            if msg is None:
                break
            if msg.WhichOneof("payload") == "audio" and first_grpc is None and msg.audio.pcm:
                first_grpc = time.monotonic()
            if (
                msg.WhichOneof("payload") == "event"
                and msg.event.type == ip.EVENT_TYPE_RESPONSE_DONE
            ):
                break
        await observer.wait_for(lambda: observer.first_loud_at is not None, 10, "reply audio")
        assert first_grpc is not None
        assert observer.first_loud_at is not None
        grpc_ms.append((first_grpc - sent) * 1000)
        rtc_ms.append((observer.first_loud_at - sent) * 1000)
    await observer.close()
    user.call.cancel()
    added = [r - g for r, g in zip(rtc_ms, grpc_ms, strict=True)]
    return {
        "grpc_first_audio_ms_median": statistics.median(grpc_ms),
        "webrtc_first_audio_ms_median": statistics.median(rtc_ms),
        "added_ms_median": statistics.median(added),
        "added_ms_max": max(added),
        "rounds": rounds,
    }


def report(r: dict[str, Any]) -> str:
    idle = r["idle"]
    rows = ["| peers | WebRTC audio | WebRTC audio+video | gRPC audio |", "|---|---|---|---|"]
    for n in (1, 2, 4):
        a = r.get(f"webrtc_audio_{n}")
        av_ = r.get(f"webrtc_av_{n}")
        g = r.get(f"grpc_audio_{n}")

        def cell(v: float | None, n: int = n) -> str:
            return "—" if v is None else f"{v:.1f} % ({(v - idle) / n:.1f} %/peer)"

        rows.append(f"| {n} | {cell(a)} | {cell(av_)} | {cell(g)} |")
    lat = r["latency"]
    rows.append("")
    rows.append(
        f"Server idle: {idle:.1f} %. Same reply, text question to first audio (median of "
        f"{lat['rounds']}): gRPC {lat['grpc_first_audio_ms_median']:.0f} ms, WebRTC "
        f"{lat['webrtc_first_audio_ms_median']:.0f} ms; the bridge adds "
        f"{lat['added_ms_median']:.0f} ms (max {lat['added_ms_max']:.0f} ms)."
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--role", choices=["parleyd"], help=argparse.SUPPRESS)
    ap.add_argument("--database-url", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.role == "parleyd":
        asyncio.run(_serve(args.database_url))
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = start_child(
            __file__, "parleyd", ["parleyd", "--database-url", f"sqlite+aiosqlite:///{tmp}/w.db"]
        )
        try:
            # This process's own aiortc peers offer loopback only, like the server's.
            from parleyd.webrtc.ice import set_host_addresses

            set_host_addresses(["127.0.0.1"])
            results = asyncio.run(measure(server.info, server.pid, args.seconds))
        finally:
            server.stop()
    results["machine"] = machine()
    print(json.dumps(results, indent=2) if args.json else report(results))


if __name__ == "__main__":
    main()
