"""The bridge's HTTP side under abuse: peer caps, offer bounds, slow and idle connections.

Every connection goes to 127.0.0.1; every loop is bounded in count and every wait in time.
The sessions here are AGENT_MODE_EXTERNAL with the engine off: OBSERVER peers join without an AI.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import grpc
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2, session_service_pb2

from parleyd.domain.errors import InvalidArgument
from parleyd.webrtc.signalling import EVICT_GRACE_S, Bridge, ConnectionGuard, check_offer
from tests.support.server import Running
from tests.support.sessions import create, get_session
from tests.support.waiting import wait_until
from tests.webrtc.client import connect, keep_loopback, offer, post_offer
from tests.webrtc.conftest import bridge_server

pytestmark = pytest.mark.timeout(90)

QUIET = {"engine": "off"}


def bridge_of(r: Running) -> Bridge:
    assert r.server.http is not None
    return r.server.http.bridge


def guard_of(r: Running) -> ConnectionGuard:
    assert r.server.http is not None
    return r.server.http.guard


async def observed_session(r: Running, key: str | None = None) -> tuple[str, str, str]:
    """(id, access token, signalling URL) of a new session an OBSERVER may join."""
    resp = await create(r, key=key, agent_mode=session_pb2.AGENT_MODE_EXTERNAL)
    return resp.session.id, resp.access_token, resp.connect.webrtc_signaling_url


async def observe(url: str, token: str) -> tuple[int, dict[str, Any]]:
    """Posts an OBSERVER offer whose answer is never applied: a peer that stays connecting."""
    client = await offer("observer")
    try:
        return await post_offer(url, token, client, role="observer")
    finally:
        await client.close()


# -- raw HTTP/1.1 on loopback -----------------------------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def raw_get(port: int, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """GET `path` exactly as written (no client-side normalisation); (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        writer.write(request.encode("latin-1"))
        status, _, body = await asyncio.wait_for(read_response(reader), timeout_s)
        return status, body
    finally:
        writer.close()


async def expect_refusal(port: int) -> None:
    """A new connection past the cap: answered 429 (or, at worst, reset) and closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        status, headers, body = await asyncio.wait_for(read_response(reader), 5)
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()
    assert status == 429, (status, body)
    assert headers["retry-after"] == "1"
    error = json.loads(body)["error"]
    assert error["code"] == "RESOURCE_EXHAUSTED"
    assert "http_max_connections = " in error["message"]
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def closed_after(reader: asyncio.StreamReader, since: float, limit_s: float) -> float:
    """Seconds from `since` until the server closes the connection (EOF or reset); bounded."""

    async def until_eof() -> None:
        try:
            for _ in range(10_000):
                if not await reader.read(4096):
                    return
        except ConnectionError:
            return

    await asyncio.wait_for(until_eof(), limit_s)
    return asyncio.get_running_loop().time() - since


# -- peers per session and per key ------------------------------------------------------------


async def test_peers_per_session_are_capped_and_a_leaving_peer_frees_its_slot(
    sqlite_url: str,
) -> None:
    async with bridge_server(sqlite_url, **QUIET, webrtc_max_peers_per_session=2) as r:
        bridge = bridge_of(r)
        sid, tok, url = await observed_session(r)
        first = await connect(url, tok, "observer")
        second = await connect(url, tok, "observer")
        clients = [first, second]
        try:
            assert bridge.peer_count(session_id=sid) == 2
            status, body = await observe(url, tok)
            assert (status, body["error"]["code"]) == (429, "RESOURCE_EXHAUSTED"), body
            assert "webrtc_max_peers_per_session = 2" in body["error"]["message"]
            # The same refusal through gRPC, and the refusals changed nothing.
            spare = await offer("observer")
            sdp = keep_loopback(spare.pc.localDescription.sdp)
            await spare.close()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await r.stub.NegotiateWebRtc(
                    session_service_pb2.NegotiateWebRtcRequest(
                        session_id=sid, sdp=sdp, type="offer", role=ip.ROLE_OBSERVER
                    ),
                    metadata=r.md(),
                )
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "webrtc_max_peers_per_session" in (err.value.details() or "")
            assert bridge.peer_count(session_id=sid) == 2
            assert len(bridge.peers) == 2

            await first.close()
            await wait_until(
                lambda: bridge.peer_count(session_id=sid) == 1,
                timeout_s=10,
                what="the closed peer's slot to be freed",
            )
            clients.append(await connect(url, tok, "observer"))
            assert bridge.peer_count(session_id=sid) == 2
        finally:
            for c in clients:
                await c.close()


async def test_peers_per_key_count_connecting_peers_over_all_sessions(sqlite_url: str) -> None:
    async with bridge_server(
        sqlite_url, **QUIET, webrtc_max_peers_per_key=2, webrtc_connect_timeout_ms=1500
    ) as r:
        bridge = bridge_of(r)
        sessions = [await observed_session(r) for _ in range(3)]
        for _, tok, url in sessions[:2]:
            status, body = await observe(url, tok)  # answered, never connected: connecting
            assert status == 200, body
        assert bridge.peer_count(api_key_id=r.key_id) == 2
        _, tok, url = sessions[2]
        status, body = await observe(url, tok)
        assert (status, body["error"]["code"]) == (429, "RESOURCE_EXHAUSTED"), body
        assert "webrtc_max_peers_per_key = 2" in body["error"]["message"]
        # Another key's sessions have slots of their own.
        _, other_tok, other_url = await observed_session(r, key=await r.new_key())
        status, body = await observe(other_url, other_tok)
        assert status == 200, body
        # A peer that never connects leaves at the connect timeout, and frees its slots.
        await wait_until(
            lambda: bridge.peer_count(api_key_id=r.key_id) == 0,
            timeout_s=10,
            what="the connecting peers to time out",
        )
        status, body = await observe(url, tok)
        assert status == 200, body


# -- offers ---------------------------------------------------------------------------------


async def test_offer_with_too_many_media_sections_is_refused(sqlite_url: str) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("parley")
    await pc.setLocalDescription(await pc.createOffer())
    four = keep_loopback(pc.localDescription.sdp)
    await pc.close()
    assert sum(line.startswith("m=") for line in four.splitlines()) == 4

    with pytest.raises(InvalidArgument) as err:
        check_offer(four, "offer")
    assert err.value.violations[0].field == "sdp"
    assert "at most 3" in err.value.message

    async with bridge_server(sqlite_url, **QUIET, webrtc_max_peers_per_session=1) as r:
        bridge = bridge_of(r)
        sid, tok, url = await observed_session(r)
        headers = {"Authorization": f"Bearer {tok}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            body = {"sdp": four, "type": "offer", "role": "observer"}
            async with http.post(url, json=body, headers=headers) as resp:
                answer = await resp.json()
                assert resp.status == 400, answer
                assert answer["error"]["code"] == "INVALID_ARGUMENT"
                assert answer["error"]["message"].startswith("sdp:")
            # An offer that passes the checks but cannot be answered gives its slot back.
            broken = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n"
            body = {"sdp": broken, "type": "offer", "role": "observer"}
            async with http.post(url, json=body, headers=headers) as resp:
                assert resp.status == 400, await resp.text()
        with pytest.raises(grpc.aio.AioRpcError) as rpc_err:
            await r.stub.NegotiateWebRtc(
                session_service_pb2.NegotiateWebRtcRequest(
                    session_id=sid, sdp=four, type="offer", role=ip.ROLE_OBSERVER
                ),
                metadata=r.md(),
            )
        assert rpc_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bridge.peer_count(session_id=sid) == 0
        assert not bridge.peers
        status, answer = await observe(url, tok)  # the one slot is still free
        assert status == 200, answer


async def test_sdp_longer_than_the_cap_is_refused(sqlite_url: str) -> None:
    async with bridge_server(sqlite_url, **QUIET) as r:
        _, tok, url = await observed_session(r)
        client = await offer("observer")
        try:
            long_sdp = keep_loopback(client.pc.localDescription.sdp) + "a=x-pad:" + "x" * 70_000
            status, body = await post_offer(url, tok, client, role="observer", sdp=long_sdp)
        finally:
            await client.close()
        assert (status, body["error"]["code"]) == (400, "INVALID_ARGUMENT"), body
        assert "sdp" in body["error"]["message"]
        assert not bridge_of(r).peers


# -- bodies and tokens ------------------------------------------------------------------------


async def test_body_over_256_kib_is_413_json(sqlite_url: str) -> None:
    async with bridge_server(sqlite_url, **QUIET) as r:
        _, tok, url = await observed_session(r)
        big = json.dumps({"type": "offer", "sdp": "v=0\n" + "x" * 300 * 1024}).encode()
        headers = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
            http.post(url, data=big, headers=headers) as resp,
        ):
            assert resp.status == 413
            body = await resp.json()
        assert body["error"]["code"] == "INVALID_ARGUMENT"
        assert body["error"]["message"].startswith("body:")


async def test_bad_or_missing_token_is_a_clean_401_even_with_a_10_mb_body(
    sqlite_url: str,
) -> None:
    async with bridge_server(sqlite_url, **QUIET) as r:
        sid, _, url = await observed_session(r)
        path = url.split(str(r.server.http_port), 1)[1]
        ten_mb = 10 * 1024 * 1024
        loop = asyncio.get_running_loop()
        for auth in ("Authorization: Bearer not-the-token\r\n", ""):
            started = loop.time()
            reader, writer = await asyncio.open_connection("127.0.0.1", r.server.http_port)
            try:
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
                    f"Content-Type: application/json\r\nContent-Length: {ten_mb}\r\n\r\n"
                )
                writer.write(head.encode())
                writer.write(b"x" * ten_mb)  # all of it: the refusal does not depend on it
                await asyncio.wait_for(writer.drain(), 10)
                status, headers, body = await asyncio.wait_for(read_response(reader), 5)
            finally:
                writer.close()
            assert status == 401, body
            assert headers["content-type"].startswith("application/json")
            assert json.loads(body)["error"]["code"] == "UNAUTHENTICATED"
            assert loop.time() - started < 10
        assert (await get_session(r, sid)).state == session_pb2.SESSION_STATE_CREATED
        assert not bridge_of(r).peers


# -- paths ------------------------------------------------------------------------------------

OUTSIDE = [
    "/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/..%2f..%2fetc%2fpasswd",
    "//etc/passwd",
    "/static/../signalling.py",
    "/app.js/../../peer.py",
    "/index.html",
    "/static/app.js",
    "/v1/sessions",
]


async def test_only_the_page_and_its_script_are_served(sqlite_url: str) -> None:
    async with bridge_server(sqlite_url, **QUIET) as r:
        port = r.server.http_port
        assert (await raw_get(port, "/"))[0] == 200
        assert (await raw_get(port, "/app.js"))[0] == 200
        for path in OUTSIDE:
            status, body = await raw_get(port, path)
            assert status == 404, (path, status)
            assert b"root:" not in body, path
            assert b"import " not in body, path


# -- slow and idle connections ----------------------------------------------------------------

TIMEOUT_S = 1.0
MARGIN_S = 1.5


async def test_connection_without_complete_headers_is_closed_at_the_deadline(
    sqlite_url: str,
) -> None:
    async with bridge_server(
        sqlite_url, **QUIET, http_header_timeout_ms=int(TIMEOUT_S * 1000)
    ) as r:
        port = r.server.http_port
        loop = asyncio.get_running_loop()

        # Trickles a header line every 0.2 s and never ends the header block.
        opened = loop.time()
        trickle_r, trickle_w = await asyncio.open_connection("127.0.0.1", port)
        trickle_w.write(b"GET / HTTP/1.1\r\n")

        async def trickle() -> None:
            for n in range(50):
                await asyncio.sleep(0.2)
                trickle_w.write(f"X-Slow-{n}: 1\r\n".encode())

        writer_task = asyncio.create_task(trickle())
        # Opens and says nothing.
        silent_opened = loop.time()
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port)
        try:
            took = await closed_after(trickle_r, opened, TIMEOUT_S + MARGIN_S)
            silent_took = await closed_after(silent_r, silent_opened, TIMEOUT_S + MARGIN_S)
        finally:
            writer_task.cancel()
            await asyncio.gather(writer_task, return_exceptions=True)
            trickle_w.close()
            silent_w.close()
        assert TIMEOUT_S * 0.8 <= took <= TIMEOUT_S + MARGIN_S, took
        assert TIMEOUT_S * 0.8 <= silent_took <= TIMEOUT_S + MARGIN_S, silent_took

        # A keep-alive connection gets the same time for its next request's headers.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, _ = await asyncio.wait_for(read_response(reader), 5)
            assert status == 200
            answered = loop.time()
            writer.write(b"GET /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            again = await closed_after(reader, answered, TIMEOUT_S + MARGIN_S)
        finally:
            writer.close()
        assert again <= TIMEOUT_S + MARGIN_S, again
        # At least one of the two was closed by our header deadline (aiohttp 3.14's own read
        # timer races it for the other on a loaded machine; either way it closed in time, above).
        assert guard_of(r).timed_out >= 1
        # The page is still served.
        assert (await raw_get(port, "/"))[0] == 200


CAP = 8


async def test_connections_past_the_cap_are_refused_or_take_an_idle_ones_place(
    sqlite_url: str,
) -> None:
    # A long header deadline: every close here is the cap's doing.
    async with bridge_server(
        sqlite_url, **QUIET, http_max_connections=CAP, http_header_timeout_ms=30_000
    ) as r:
        port = r.server.http_port
        guard = guard_of(r)
        sid, _, _ = await observed_session(r)

        # CAP idle connections take every slot. 10 more, while the idle ones are still within
        # their eviction grace, are refused at once.
        loop = asyncio.get_running_loop()
        first_opened = loop.time()
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CAP)]
        watchers = [asyncio.create_task(closed_after(rd, first_opened, 30)) for rd, _ in idle]
        try:
            await wait_until(
                lambda: guard.open_connections == CAP, timeout_s=5, what="CAP idle connections"
            )
            for _ in range(10):
                await expect_refusal(port)
            assert loop.time() - first_opened < EVICT_GRACE_S  # else they may have evicted
            assert guard.refused == 10
            assert guard.open_connections == CAP
            assert not any(w.done() for w in watchers)
            # gRPC is untouched.
            assert (await get_session(r, sid)).id == sid

            # A fresh client is served in place of the oldest idle connection once that one is
            # past the grace: within EVICT_GRACE_S (+ margin) of the idle ones opening.
            async def page_served() -> bool:
                return (await raw_get(port, "/"))[0] == 200

            await wait_until(
                page_served, timeout_s=EVICT_GRACE_S + MARGIN_S, interval_s=0.1, what="the page"
            )
            assert guard.evicted >= 1
            await wait_until(lambda: watchers[0].done(), timeout_s=5, what="the oldest evicted")
            assert guard.open_connections <= CAP
        finally:
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            for _, w in idle:
                w.close()
        await wait_until(
            lambda: guard.open_connections == 0, timeout_s=5, what="idle connections gone"
        )

        # CAP keep-alive connections that have each been served: none may be evicted, so a
        # new connection is refused with a 429 (or, at worst, reset) instead of waiting.
        busy: list[asyncio.StreamWriter] = []
        try:
            for _ in range(CAP):
                rd, wr = await asyncio.open_connection("127.0.0.1", port)
                busy.append(wr)
                wr.write(b"GET /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                status, _, _ = await asyncio.wait_for(read_response(rd), 5)
                assert status == 200
            refused_before = guard.refused
            await expect_refusal(port)
            assert guard.refused == refused_before + 1
            assert guard.open_connections == CAP
            # Once one leaves, a new client is served again.
            busy.pop().close()
            await wait_until(
                lambda: guard.open_connections < CAP, timeout_s=5, what="a slot to free up"
            )
            assert (await raw_get(port, "/"))[0] == 200
        finally:
            for wr in busy:
                wr.close()
