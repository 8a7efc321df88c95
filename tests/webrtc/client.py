"""A WebRTC test client in Python (aiortc) for the bridge, on loopback only, with deadlines."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from tests.support.waiting import wait_until

RATE = 48_000
FRAME = 960


class PcmSource(MediaStreamTrack):
    """A microphone: plays queued PCM16 mono 48 kHz in real time, silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()
        self._start: float | None = None
        self._pts = 0

    def play(self, pcm: bytes) -> None:
        self.buffer += pcm

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME
            wait = self._start + self._pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        chunk = bytes(self.buffer[: FRAME * 2]).ljust(FRAME * 2, b"\0")
        del self.buffer[: FRAME * 2]
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(chunk)
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


def keep_loopback(sdp: str) -> str:
    """Drops every candidate that is not on 127.0.0.1 / ::1 (the tests' network rule)."""
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) < 5 or parts[4] not in ("127.0.0.1", "::1"):
                continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Client:
    pc: RTCPeerConnection
    mic: PcmSource | None
    messages: list[dict[str, Any]] = field(default_factory=list)
    audio_frames: int = 0
    loud_frames: int = 0
    first_loud_at: float | None = None
    video_frames: int = 0
    channel: Any = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def wait_for(self, pred: Any, timeout: float, what: str) -> None:
        def saw() -> str:
            kinds = [m.get("event") or m.get("type") for m in self.messages][-20:]
            return f"no {what}; saw {kinds}"

        await wait_until(pred, timeout_s=timeout, interval_s=0.05, what=saw)

    def has(self, **want: Any) -> bool:
        return any(all(m.get(k) == v for k, v in want.items()) for m in self.messages)

    def send(self, **message: Any) -> None:
        self.channel.send(json.dumps(message))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.pc.close()


async def _sink(client: Client, track: MediaStreamTrack) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if track.kind == "audio":
            client.audio_frames += 1
            level = np.abs(frame.to_ndarray().astype(np.int32)).max()
            if level > 300:
                client.loud_frames += 1
                if client.first_loud_at is None:
                    client.first_loud_at = time.monotonic()
        else:
            client.video_frames += 1


async def offer(role: str = "user", video: bool = False) -> Client:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = None
    if role == "user":
        mic = PcmSource()
        pc.addTrack(mic)
    else:
        pc.addTransceiver("audio", direction="recvonly")
    if video:
        pc.addTransceiver("video", direction="recvonly")
    client = Client(pc, mic)
    client.channel = pc.createDataChannel("parley")
    client.channel.on("message", lambda m: client.messages.append(json.loads(m)))

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        client._tasks.append(asyncio.create_task(_sink(client, track)))

    await pc.setLocalDescription(await pc.createOffer())
    return client


async def post_offer(
    url: str, token: str, client: Client, role: str = "user", **extra: Any
) -> tuple[int, dict[str, Any]]:
    body = {"sdp": keep_loopback(client.pc.localDescription.sdp), "type": "offer", "role": role}
    body.update(extra)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
        http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.status, await resp.json()


async def connect(url: str, token: str, role: str = "user", video: bool = False) -> Client:
    client = await offer(role, video)
    status, answer = await post_offer(url, token, client, role)
    assert status == 200, answer
    await client.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    await client.wait_for(lambda: client.pc.connectionState == "connected", 15, "connection")
    return client
