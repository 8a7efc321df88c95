"""The bridge from Python: an aiortc peer on loopback, signalling over HTTP and gRPC."""

from __future__ import annotations

import grpc
import pytest
from aiortc import RTCSessionDescription
from parley.v1 import interact_pb2 as ip
from parley.v1 import session_pb2, session_service_pb2

from tests.engine.speech import say, silence
from tests.support.server import Running
from tests.support.sessions import get_session, messages, terminate, wait_state
from tests.webrtc.client import connect, keep_loopback, offer, post_offer
from tests.webrtc.conftest import bridge_server, new_session

pytestmark = pytest.mark.timeout(90)

STATE_WAIT_S = 10  # a peer connection takes its time to connect and to notice it is closed


async def test_connect_url_and_answer_offers_loopback_only(bridge: Running) -> None:
    sid, tok, url = await new_session(bridge)
    assert url == f"http://127.0.0.1:{bridge.server.http_port}/v1/sessions/{sid}/webrtc"
    client = await offer("user")
    status, answer = await post_offer(url, tok, client)
    try:
        assert status == 200, answer
        assert answer["type"] == "answer"
        candidates = [x for x in answer["sdp"].splitlines() if x.startswith("a=candidate:")]
        assert candidates
        assert all(c.split()[4] == "127.0.0.1" for c in candidates), candidates
    finally:
        await client.close()


async def test_refusals_change_nothing(bridge: Running) -> None:
    sid, tok, url = await new_session(bridge)
    client = await offer("user")
    try:
        status, body = await post_offer(url, "wrong-token", client)
        assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")
        status, body = await post_offer(url, tok, client, sdp="hello")
        assert (status, body["error"]["code"]) == (400, "INVALID_ARGUMENT")
        status, body = await post_offer(url, tok, client, role="agent")
        assert status == 400
        assert (await get_session(bridge, sid)).state == session_pb2.SESSION_STATE_CREATED
        assert not bridge.server.hub.rooms  # type: ignore[union-attr]
        await terminate(bridge, sid)
        status, body = await post_offer(url, tok, client)
        assert (status, body["error"]["code"]) == (409, "FAILED_PRECONDITION")
    finally:
        await client.close()


async def test_negotiate_rpc(bridge: Running) -> None:
    sid, _, _ = await new_session(bridge)
    client = await offer("observer")
    sdp = keep_loopback(client.pc.localDescription.sdp)
    req = session_service_pb2.NegotiateWebRtcRequest
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await bridge.stub.NegotiateWebRtc(
                req(session_id=sid, sdp=sdp, type="offer", role=ip.ROLE_OBSERVER),
                metadata=bridge.md("nope"),
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await bridge.stub.NegotiateWebRtc(
                req(session_id=sid, sdp="v=0", type="offer", role=ip.ROLE_OBSERVER),
                metadata=bridge.md(),
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        resp = await bridge.stub.NegotiateWebRtc(
            req(session_id=sid, sdp=sdp, type="offer", role=ip.ROLE_OBSERVER), metadata=bridge.md()
        )
        assert resp.type == "answer"
        await client.pc.setRemoteDescription(RTCSessionDescription(resp.sdp, resp.type))
        await client.wait_for(lambda: client.has(type="opened"), 15, "opened")
    finally:
        await client.close()
    await terminate(bridge, sid)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await bridge.stub.NegotiateWebRtc(
            req(session_id=sid, sdp=sdp, type="offer", role=ip.ROLE_OBSERVER), metadata=bridge.md()
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_spoken_question_typed_text_and_pause_on_close(bridge: Running) -> None:
    sid, tok, url = await new_session(bridge)
    client = await connect(url, tok, "user")
    try:
        await client.wait_for(lambda: client.has(type="opened"), 10, "opened")
        await wait_state(bridge, sid, session_pb2.SESSION_STATE_ACTIVE, timeout_s=STATE_WAIT_S)
        assert client.mic is not None
        client.mic.play(say("how much is a sword", rate=48_000) + silence(800, 48_000))
        await client.wait_for(
            lambda: client.has(type="transcript", is_final=True), 20, "final transcript"
        )
        await client.wait_for(lambda: client.has(event="response_done"), 30, "response_done")
        await client.wait_for(lambda: client.loud_frames > 10, 10, "reply audio")
        client.send(type="text", text="how much is a shield")
        await client.wait_for(
            lambda: sum(1 for m in client.messages if m.get("event") == "response_done") >= 2,
            30,
            "second reply",
        )
        texts = [m.text.lower() for m in await messages(bridge, sid)]
        assert any("sword" in t for t in texts), texts
        assert any("shield" in t for t in texts), texts
    finally:
        await client.close()
    await wait_state(bridge, sid, session_pb2.SESSION_STATE_PAUSED, timeout_s=STATE_WAIT_S)
    # Joining again resumes it.
    again = await connect(url, tok, "user")
    try:
        await wait_state(bridge, sid, session_pb2.SESSION_STATE_ACTIVE, timeout_s=STATE_WAIT_S)
    finally:
        await again.close()
    await wait_state(bridge, sid, session_pb2.SESSION_STATE_PAUSED, timeout_s=STATE_WAIT_S)


async def test_video_session_sends_avatar_frames(bridge: Running) -> None:
    _, tok, url = await new_session(bridge, session_pb2.CONNECTION_TYPE_VIDEO, avatar_id="brom")
    client = await connect(url, tok, "user", video=True)
    try:
        await client.wait_for(lambda: client.video_frames > 5, 20, "video frames")
    finally:
        await client.close()


async def test_peer_that_never_connects_leaves(sqlite_url: str) -> None:
    async with bridge_server(sqlite_url, webrtc_connect_timeout_ms=1000) as r:
        sid, tok, url = await new_session(r)
        client = await offer("user")
        status, _ = await post_offer(url, tok, client)  # the answer is never applied
        assert status == 200
        await wait_state(r, sid, session_pb2.SESSION_STATE_ACTIVE, timeout_s=STATE_WAIT_S)
        await wait_state(r, sid, session_pb2.SESSION_STATE_PAUSED, timeout_s=STATE_WAIT_S)
        assert not r.server.http.bridge.peers  # type: ignore[union-attr]
        await client.close()
