"""A USER in a process of its own, for tests/faults/test_kill.py to SIGKILL mid-Interact.

    python _interact_client.py TARGET SESSION_ID ACCESS_TOKEN

It creates nothing: it joins the given session as ROLE_USER (16 kHz, 20 ms chunks), prints
"joined" once `opened` came, then streams 20 ms chunks of audio in real time until it is killed
(and, should nobody kill it, stops by itself after MAX_SECONDS). It reads what the server sends
so that nothing backs up. Not a test module: pytest does not collect it.
"""

from __future__ import annotations

import asyncio
import math
import sys

import grpc
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_service_pb2_grpc

RATE = 16_000
CHUNK_MS = 20
MAX_SECONDS = 60.0  # a safety net only: the test kills this process long before
OPEN_TIMEOUT_S = 10.0


def chunk(n: int) -> bytes:
    """20 ms of a 440 Hz tone, PCM16 little-endian, continuing the phase of chunk n-1."""
    samples = RATE * CHUNK_MS // 1000
    out = bytearray()
    for i in range(samples):
        t = (n * samples + i) / RATE
        out += int(8000 * math.sin(2 * math.pi * 440 * t)).to_bytes(2, "little", signed=True)
    return bytes(out)


async def main(target: str, session_id: str, token: str) -> int:
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.enable_http_proxy", 0)]
    ) as channel:
        call = session_service_pb2_grpc.SessionServiceStub(channel).Interact()
        await call.write(
            ip.InteractRequest(
                join=ip.Join(
                    session_id=session_id,
                    access_token=token,
                    role=ip.ROLE_USER,
                    audio_format=ip.AudioFormat(sample_rate=RATE, chunk_ms=CHUNK_MS),
                    client=ip.ClientInfo(name="faults-interact-client"),
                )
            )
        )
        opened = asyncio.get_running_loop().create_future()

        async def read_all() -> None:
            # Bounded by the stream: it ends when the call ends (or this process is killed).
            while (msg := await call.read()) is not grpc.aio.EOF:
                if msg.WhichOneof("payload") == "opened" and not opened.done():
                    opened.set_result(None)
            if not opened.done():
                opened.set_exception(RuntimeError("stream ended before opened"))

        reader = asyncio.create_task(read_all())
        await asyncio.wait_for(asyncio.shield(opened), OPEN_TIMEOUT_S)
        print("joined", flush=True)

        loop = asyncio.get_running_loop()
        start = loop.time()
        pcm = [chunk(n) for n in range(50)]  # one second of tone, repeated
        for n in range(int(MAX_SECONDS * 1000 / CHUNK_MS)):
            await call.write(
                ip.InteractRequest(audio=ip.AudioInput(pcm=pcm[n % len(pcm)], sequence=n + 1))
            )
            # Real-time pacing: chunk n+1 is due (n+1) * 20 ms after the first.
            await asyncio.sleep(max(0.0, start + (n + 1) * CHUNK_MS / 1000 - loop.time()))
        reader.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:4])))
