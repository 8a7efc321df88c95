"""Voice-to-voice latency of the built-in engine, and real-time factors of its ASR and TTS.

    .venv/bin/python bench/voice.py [--utterances 20] [--json]

A parleyd server (engine on, default 300 ms end-of-turn silence, SQLite) runs as a subprocess of
this script. This process joins a BUILTIN session as the USER and speaks questions made with
espeak-ng into Interact in real-time 20 ms chunks, followed by silence, as a microphone would.
Voice-to-voice latency is the time from the end of the user's speech in the input stream (when
the chunk holding the last voiced sample was sent) to the arrival of the first chunk of the AI's
voice: it includes the end-of-turn wait, recognition, the brain, synthesis and both gRPC hops.
Target: p50 <= 400 ms (hosted voice agents claim 500-800 ms). Figures only, nothing asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _harness import machine, percentile, serve_parleyd, start_child

RATE = 16_000
CHUNK_MS = 20
SITUATION = (
    "You are Brom, the blacksmith of Oakvale. A sword costs forty gold coins. A shield costs "
    "twenty five gold coins. Your forge stands next to the old well. You repair armor for five "
    "gold a piece. The forge opens at dawn and closes at sunset. Refunds are given within seven "
    "days if the blade is unused. The mayor of Oakvale is Elsa."
)
QUESTIONS = (
    "how much is a sword",
    "how much is a shield",
    "where is your forge",
    "when do you open",
    "can you repair my armor",
    "what is your refund policy",
    "who is the mayor",
    "hello there",
    "what do you sell",
    "how much does a repair cost",
)


async def _serve(database_url: str) -> None:
    await serve_parleyd(database_url, greeting="off")


def voiced_end(pcm: bytes, threshold: int = 300) -> int:
    """Byte offset just after the last sample louder than `threshold`."""
    import numpy as np

    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.nonzero(np.abs(samples.astype(np.int32)) > threshold)[0]
    return int(loud[-1] + 1) * 2 if len(loud) else 0


async def measure(target: str, api_key: str, utterances: int) -> list[dict[str, Any]]:
    from parley.v1 import interact_pb2 as ip
    from parley.v1 import session_pb2, session_service_pb2, session_service_pb2_grpc

    from tests.engine.speech import say, silence

    results: list[dict[str, Any]] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        created = await stub.CreateSession(
            session_service_pb2.CreateSessionRequest(
                session=session_pb2.Session(
                    agent_id="brom", profile="shopkeeper", situation=SITUATION
                )
            ),
            metadata=(("x-api-key", api_key),),
        )
        call = stub.Interact()
        await call.write(
            ip.InteractRequest(
                join=ip.Join(
                    session_id=created.session.id,
                    access_token=created.access_token,
                    role=ip.ROLE_USER,
                    audio_format=ip.AudioFormat(sample_rate=RATE, chunk_ms=CHUNK_MS),
                )
            )
        )
        loop = asyncio.get_running_loop()
        first_audio: asyncio.Future[float] | None = None
        done: asyncio.Event = asyncio.Event()
        transcript: list[str] = []

        async def reader() -> None:
            nonlocal first_audio
            while True:
                m = await call.read()
                if m is grpc.aio.EOF:
                    return
                kind = m.WhichOneof("payload")
                if kind == "audio" and first_audio is not None and not first_audio.done():
                    first_audio.set_result(time.perf_counter())
                elif kind == "transcript" and m.transcript.is_final:
                    transcript.append(m.transcript.text)
                elif kind == "event" and m.event.type == ip.EVENT_TYPE_RESPONSE_DONE:
                    done.set()

        task = asyncio.create_task(reader())
        step = RATE * CHUNK_MS // 1000 * 2
        for n in range(utterances):
            question = QUESTIONS[n % len(QUESTIONS)]
            speech = silence(300) + say(question, rate=RATE)
            end = voiced_end(speech)
            pcm = speech + silence(1500)
            first_audio = loop.create_future()
            done.clear()
            transcript.clear()
            t_end = None
            start = loop.time()
            for k, offset in enumerate(range(0, len(pcm), step)):
                await asyncio.sleep(max(0.0, start + k * CHUNK_MS / 1000 - loop.time()))
                await call.write(
                    ip.InteractRequest(audio=ip.AudioInput(pcm=pcm[offset : offset + step]))
                )
                if t_end is None and offset + step >= end:
                    t_end = time.perf_counter()
                if first_audio.done():
                    break
            try:
                async with asyncio.timeout(15):
                    t_first = await first_audio
                    await done.wait()
            except TimeoutError:
                results.append({"question": question, "latency_ms": None, "heard": transcript[:]})
                continue
            assert t_end is not None
            results.append(
                {
                    "question": question,
                    "latency_ms": round((t_first - t_end) * 1000, 1),
                    "heard": " ".join(transcript),
                }
            )
            print(
                f"  {question!r}: {results[-1]['latency_ms']} ms, heard {transcript}",
                file=sys.stderr,
            )
            await asyncio.sleep(0.3)
        call.cancel()
        task.cancel()
    return results


async def real_time_factors() -> dict[str, float]:
    from parleyd.engine.asr import PocketSphinxRecognizer
    from parleyd.engine.tts import EspeakSynthesizer
    from tests.engine.speech import say

    rec = PocketSphinxRecognizer()
    rec.set_context([SITUATION])
    audio_s = asr_s = 0.0
    for q in QUESTIONS:
        pcm = say(q, rate=RATE)
        audio_s += len(pcm) / 2 / RATE
        t0 = time.perf_counter()
        rec.start()
        for k in range(0, len(pcm), 640):
            rec.feed(pcm[k : k + 640])
        rec.finish()
        asr_s += time.perf_counter() - t0
    synth = EspeakSynthesizer()
    speech_s = tts_s = 0.0
    for sentence in SITUATION.split(". "):
        t0 = time.perf_counter()
        speech = await synth.synthesize(sentence, voice="en-us", sample_rate=48_000)
        tts_s += time.perf_counter() - t0
        speech_s += speech.duration_ms / 1000
    return {"asr_rtf": round(asr_s / audio_s, 4), "tts_rtf_48k": round(tts_s / speech_s, 4)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--role", choices=["parleyd"], help=argparse.SUPPRESS)
    ap.add_argument("--database-url", help=argparse.SUPPRESS)
    ap.add_argument("--utterances", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.role == "parleyd":
        asyncio.run(_serve(args.database_url))
        return
    with tempfile.TemporaryDirectory(prefix="parleyd-voice-") as tmp:
        server = start_child(
            __file__, "parleyd", ["parleyd", "--database-url", f"sqlite+aiosqlite:///{tmp}/v.db"]
        )
        try:
            results = asyncio.run(measure(server.target, server.info["api_key"], args.utterances))
        finally:
            server.stop()
    rtf = asyncio.run(real_time_factors())
    lat = [r["latency_ms"] for r in results if r["latency_ms"] is not None]
    doc = {
        "benchmark": "voice",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "end_of_turn_silence_ms": 300,
        "utterances": len(results),
        "answered": len(lat),
        "latency_p50_ms": round(percentile(lat, 50), 1) if lat else None,
        "latency_p95_ms": round(percentile(lat, 95), 1) if lat else None,
        "latency_mean_ms": round(statistics.fmean(lat), 1) if lat else None,
        "target_p50_ms": 400,
        **rtf,
        "results": results,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"parleyd voice-to-voice — {doc['date']} — {doc['machine']['cpus']} cores")
    print(f"  {doc['answered']}/{doc['utterances']} utterances answered")
    verdict = "met" if lat and doc["latency_p50_ms"] <= 400 else "MISSED"
    print(
        f"  end of speech -> first AI audio: p50 {doc['latency_p50_ms']} ms, "
        f"p95 {doc['latency_p95_ms']} ms (300 ms end-of-turn silence included; target p50 <= "
        f"400 ms: {verdict})"
    )
    print(f"  real-time factor: ASR {doc['asr_rtf']}, TTS {doc['tts_rtf_48k']} (48 kHz)")


if __name__ == "__main__":
    main()
