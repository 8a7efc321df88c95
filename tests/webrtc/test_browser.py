"""The bridge in a real browser: Debian's Chromium driven by playwright, loopback only.

Chromium gets a fake microphone (a WAV espeak-ng made) and the page keeps only 127.0.0.1/::1
candidates in its offer (`loopback=1`); the bridge offers 127.0.0.1 only. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2, session_service_pb2

from tests.conftest import Running
from tests.engine.speech import say, silence
from tests.interact_client import Peer, has
from tests.webrtc.conftest import bridge_server, new_session
from tests.webrtc.test_bridge import wait_state

CHROMIUM = os.environ.get("PARLEYD_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing: run `make browser-deps`"
    ),
]


def fake_mic(path: Path) -> Path:
    """The browser's microphone: a question between silences, at 48 kHz mono."""
    pcm = silence(600, 48_000) + say("how much is a sword", rate=48_000) + silence(2_500, 48_000)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(pcm)
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    tmp = Path(tempfile.mkdtemp(prefix="parleyd-chromium-"))
    wav = fake_mic(tmp / "mic.wav")
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required",
    ]
    async with playwright_api.async_playwright() as pw:
        context = await asyncio.wait_for(
            pw.chromium.launch_persistent_context(
                str(tmp / "profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=args,
                ignore_default_args=["--mute-audio"],
                viewport={"width": 1000, "height": 620},
            ),
            30,
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            await asyncio.wait_for(context.close(), 15)
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[Running]:
    r = await bridge_server(sqlite_url)
    try:
        yield r
    finally:
        await r.channel.close()
        await r.server.stop(0.2)


async def open_page(context: Any, r: Running, sid: str, tok: str, role: str) -> Any:
    page = await context.new_page()
    url = (
        f"http://127.0.0.1:{r.server.http_port}/"
        f"#session={sid}&token={tok}&role={role}&loopback=1&autoconnect=1"
    )
    await page.goto(url)
    await page.wait_for_function("window.parley && window.parley.opened === true", timeout=15_000)
    return page


STATS_JS = """async (kind) => {
  const out = {packets: 0, energy: 0, level: 0, framesDecoded: 0};
  const stats = await window.parley.pc.getStats();
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === kind) {
      out.packets += s.packetsReceived || 0;
      out.energy += s.totalAudioEnergy || 0;
      out.level = Math.max(out.level, s.audioLevel || 0);
      out.framesDecoded += s.framesDecoded || 0;
    }
  });
  return out;
}"""


async def stats_until(page: Any, kind: str, pred: Any, timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats: dict[str, Any] = await page.evaluate(STATS_JS, kind)
        if pred(stats):
            return stats
        if loop.time() > deadline:
            raise AssertionError(f"{kind} stats never matched within {timeout}s: {stats}")
        await asyncio.sleep(0.25)


async def test_browser_user_talks_sees_the_face_and_resumes(server: Running, browser: Any) -> None:
    sid, tok, _ = await new_session(server, session_pb2.CONNECTION_TYPE_VIDEO, avatar_id="brom")
    page = await open_page(browser, server, sid, tok, "user")
    await wait_state(server, sid, session_pb2.SESSION_STATE_ACTIVE)
    # Press to talk for longer than the fake microphone's loop: one whole question gets through.
    await page.dispatch_event("#talk", "pointerdown")
    await page.wait_for_function(
        "window.parley.transcripts.some(t => t.is_final && /sword/.test(t.text))",
        timeout=20_000,
    )
    await page.dispatch_event("#talk", "pointerup")
    await page.wait_for_function("window.parley.replies.length > 0", timeout=30_000)
    await page.wait_for_selector("#log .user", timeout=5_000)
    audio = await stats_until(page, "audio", lambda s: s["energy"] > 0, 15)
    assert audio["packets"] > 0
    await stats_until(page, "video", lambda s: s["framesDecoded"] > 0, 15)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "webrtc-demo.png"))
    msgs = await server.stub.ListMessages(
        session_service_pb2.ListMessagesRequest(session_id=sid), metadata=server.md()
    )
    assert any("sword" in m.text.lower() for m in msgs.messages), [m.text for m in msgs.messages]
    # Closing the page pauses the session; opening it again resumes it.
    await page.close()
    await wait_state(server, sid, session_pb2.SESSION_STATE_PAUSED, timeout=15)
    page = await open_page(browser, server, sid, tok, "user")
    await wait_state(server, sid, session_pb2.SESSION_STATE_ACTIVE)
    await page.close()
    await wait_state(server, sid, session_pb2.SESSION_STATE_PAUSED, timeout=15)


async def test_grpc_user_reply_reaches_a_browser_observer(server: Running, browser: Any) -> None:
    sid, tok, _ = await new_session(server)
    peer = Peer(server.stub.Interact(), ip.ROLE_USER)
    await peer.send(
        join=ip.Join(
            session_id=sid,
            access_token=tok,
            role=ip.ROLE_USER,
            audio_format=ip.AudioFormat(sample_rate=16_000, chunk_ms=20),
        )
    )
    await peer.until(has("opened"), timeout=20)
    page = await open_page(browser, server, sid, tok, "observer")
    try:
        await peer.send(text=ip.TextInput(text="how much is a sword"))
        await page.wait_for_function("window.parley.replies.length > 0", timeout=30_000)
        audio = await stats_until(page, "audio", lambda s: s["energy"] > 0, 15)
        assert audio["packets"] > 0
    finally:
        await page.close()
        peer.call.cancel()
