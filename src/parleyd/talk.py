"""`parleyd talk`: a small client that talks to a character on a running server.

It creates a session with the API key, joins it as the USER, sends typed text or a WAV file
(streamed in real time in 20 ms chunks, then silence so the end of the turn is heard), prints
what the character says, and saves its voice to a WAV file.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import wave
from pathlib import Path
from typing import Any

import grpc
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2, session_service_pb2, session_service_pb2_grpc

CHUNK_MS = 20


def read_wav(path: Path, rate: int) -> bytes:
    """PCM16 mono at `rate` from a WAV file (converted if needed)."""
    from parleyd.audio import downmix_pcm, from_width, resample_pcm

    with wave.open(str(path), "rb") as w:
        pcm = w.readframes(w.getnframes())
        if w.getsampwidth() != 2:
            pcm = from_width(pcm, w.getsampwidth())
        if w.getnchannels() > 1:
            pcm = downmix_pcm(pcm, w.getnchannels())
        if w.getframerate() != rate:
            pcm = resample_pcm(pcm, w.getframerate(), rate)
    return pcm


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


async def talk(
    target: str,
    api_key: str,
    *,
    texts: list[str],
    wav: Path | None,
    out: Path | None,
    agent_id: str,
    profile: str,
    situation: str,
    rate: int = 16_000,
    timeout_s: float = 60.0,
) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        created = await stub.CreateSession(
            session_service_pb2.CreateSessionRequest(
                session=session_pb2.Session(
                    agent_id=agent_id,
                    profile=profile,
                    situation=situation,
                    metadata={"greeting": "off"},
                )
            ),
            metadata=(("x-api-key", api_key),),
            timeout=10,
        )
        print(f"session {created.session.id}", file=sys.stderr)
        call = stub.Interact()
        await call.write(
            ip.InteractRequest(
                join=ip.Join(
                    session_id=created.session.id,
                    access_token=created.access_token,
                    role=ip.ROLE_USER,
                    audio_format=ip.AudioFormat(sample_rate=rate, chunk_ms=CHUNK_MS),
                    client=ip.ClientInfo(name="parleyd talk"),
                )
            )
        )
        voice = bytearray()
        # One turn at a time: each question waits for its answer, as a person would, so no
        # answer is cut short by the next question.
        answered = asyncio.Condition()
        replies = 0
        ended = False

        async def replied(n: int) -> None:
            async with answered:
                await answered.wait_for(lambda: replies >= n or ended)

        async def count(ending: bool = False) -> None:
            nonlocal replies, ended
            async with answered:
                if ending:
                    ended = True
                else:
                    replies += 1
                answered.notify_all()

        async def receive() -> None:
            while True:
                m: Any = await call.read()
                if m is grpc.aio.EOF:
                    await count(ending=True)
                    return
                kind = m.WhichOneof("payload")
                if kind == "audio":
                    voice.extend(m.audio.pcm)
                elif kind == "transcript" and m.transcript.is_final:
                    print(f"you: {m.transcript.text}")
                elif kind == "text" and m.text.is_final:
                    print(f"{agent_id}: {m.text.text}")
                elif kind == "event" and m.event.type == ip.EVENT_TYPE_RESPONSE_DONE:
                    await count()
                elif kind == "error":
                    print(f"error: {m.error.message}", file=sys.stderr)

        reader = asyncio.create_task(receive())
        try:
            async with asyncio.timeout(timeout_s):
                for n, text in enumerate(texts, start=1):
                    await call.write(ip.InteractRequest(text=ip.TextInput(text=text)))
                    await replied(n)
                if wav is not None:
                    pcm = read_wav(wav, rate) + bytes(rate * 2)  # + 1 s of silence: end of turn
                    step = rate * CHUNK_MS // 1000 * 2
                    loop = asyncio.get_running_loop()
                    start = loop.time()
                    for n, k in enumerate(range(0, len(pcm), step)):
                        await asyncio.sleep(max(0.0, start + n * CHUNK_MS / 1000 - loop.time()))
                        chunk = pcm[k : k + step]
                        if len(chunk) % 2:
                            chunk = chunk[:-1]
                        await call.write(ip.InteractRequest(audio=ip.AudioInput(pcm=chunk)))
                    await replied(len(texts) + 1)
                if ended:
                    print("the server ended the conversation early", file=sys.stderr)
                    return 1
        except TimeoutError:
            print(f"no complete answer within {timeout_s:g}s", file=sys.stderr)
            return 1
        except grpc.aio.AioRpcError as exc:
            print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        finally:
            with contextlib.suppress(Exception):
                await call.write(ip.InteractRequest(leave=ip.Leave(reason="done")))
            reader.cancel()
        if out is not None:
            write_wav(out, bytes(voice), rate)
            print(f"saved {len(voice) / 2 / rate:.1f}s of the reply to {out}", file=sys.stderr)
        return 0
